-- The reconciliation ledger, per customer-hour: what the collectors saw (from the outcome counts carried
-- through Kafka), what is stored in the raw store, and what the rollups counted. Written by the
-- aggregation job in its own transaction; `stored` is recounted independently by `hourglass verify`.
CREATE TABLE ledger (
    customer_id        text        NOT NULL,
    hour_start         timestamptz NOT NULL,
    received           bigint      NOT NULL,
    accepted           bigint      NOT NULL,
    rejected           bigint      NOT NULL,
    rejected_by_reason jsonb       NOT NULL DEFAULT '{}',
    throttled          bigint      NOT NULL,
    stored             bigint      NOT NULL,
    counted            bigint      NOT NULL,
    is_final           boolean     NOT NULL,
    counted_at         timestamptz NOT NULL DEFAULT now(),
    verified_at        timestamptz,
    PRIMARY KEY (customer_id, hour_start)
);

-- Final hours whose stored and counted disagree: the alert.
CREATE INDEX ledger_mismatches ON ledger (hour_start) WHERE is_final AND stored <> counted;
