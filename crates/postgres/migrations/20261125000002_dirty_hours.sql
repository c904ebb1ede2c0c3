-- Customer-hours that received data and need (re)aggregation, written by the ingestor after the raw
-- events are stored and before it commits its Kafka offsets (so a crash re-marks, never loses a mark).
-- The aggregator turns them into jobs; `generation` tells it whether new data arrived while it worked.
CREATE TABLE dirty_hours (
    customer_id     text        NOT NULL,
    hour_start      timestamptz NOT NULL,
    generation      bigint      NOT NULL DEFAULT 1,
    first_marked_at timestamptz NOT NULL DEFAULT now(),
    last_marked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, hour_start)
);

CREATE INDEX dirty_hours_by_last_mark ON dirty_hours (last_marked_at);
