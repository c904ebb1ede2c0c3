-- Aggregation jobs live on dirty_hours itself: an hour is pending while new data arrived after its last
-- aggregation (generation > aggregated_generation). A worker leases it (FOR UPDATE SKIP LOCKED, so any
-- number of aggregator replicas run without a leader); a crashed worker's lease simply expires.
ALTER TABLE dirty_hours
    ADD COLUMN aggregated_generation bigint      NOT NULL DEFAULT 0,
    ADD COLUMN lease_owner           text,
    ADD COLUMN leased_until          timestamptz,
    ADD COLUMN attempts              integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_error            text;

CREATE INDEX dirty_hours_pending ON dirty_hours (hour_start) WHERE generation > aggregated_generation;

-- Hourly rollups per customer and event type. A whole hour is replaced in one transaction; `revision`
-- counts the replacements, `logic_version` names the aggregation logic that produced the row.
CREATE TABLE hourly_rollups (
    customer_id    text        NOT NULL,
    hour_start     timestamptz NOT NULL,
    event_type     text        NOT NULL,
    events         bigint      NOT NULL,
    distinct_users bigint      NOT NULL,
    revision       integer     NOT NULL,
    logic_version  integer     NOT NULL,
    is_final       boolean     NOT NULL,
    final_as_of    timestamptz,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, hour_start, event_type)
);

-- The revision of each aggregated hour (also for hours whose rollup is empty).
CREATE TABLE hour_revisions (
    customer_id   text        NOT NULL,
    hour_start    timestamptz NOT NULL,
    revision      integer     NOT NULL,
    logic_version integer     NOT NULL,
    events        bigint      NOT NULL,
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, hour_start)
);
