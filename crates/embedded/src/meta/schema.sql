-- The metadata database of standalone mode (`meta.db`): the same tables as the Postgres migrations
-- (crates/postgres/migrations), in their current shape. Hours are INTEGER unix seconds, as in the seams;
-- instants are INTEGER unix microseconds (`_us`), Postgres's timestamptz precision, so keys created in one
-- second still list in creation order and leases shorter than a second still expire. Every statement is
-- idempotent: this runs on every open.

CREATE TABLE IF NOT EXISTS customers (
    customer_id   TEXT    PRIMARY KEY,
    created_at_us INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS api_keys (
    -- The key's public id (`hgk_` + 8 characters), shown in listings and used to revoke it.
    key_id        TEXT    PRIMARY KEY,
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash      BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    customer_id   TEXT    NOT NULL REFERENCES customers (customer_id),
    scope         TEXT    NOT NULL CHECK (scope IN ('ingest', 'query', 'admin')),
    name          TEXT    NOT NULL DEFAULT '',
    created_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
) STRICT;

CREATE INDEX IF NOT EXISTS api_keys_by_customer ON api_keys (customer_id);

-- Limits that differ from the collector's defaults; NULL means "use the default".
CREATE TABLE IF NOT EXISTS customer_limits (
    customer_id       TEXT    PRIMARY KEY REFERENCES customers (customer_id),
    events_per_second INTEGER CHECK (events_per_second > 0 AND events_per_second <= 2147483647),
    burst_events      INTEGER CHECK (burst_events > 0 AND burst_events <= 2147483647),
    kafka_key_spread  INTEGER CHECK (kafka_key_spread BETWEEN 1 AND 1024),
    updated_at_us     INTEGER NOT NULL,
    max_event_types_per_hour          INTEGER CHECK (max_event_types_per_hour > 0),
    max_property_names_per_event_type INTEGER CHECK (max_property_names_per_event_type > 0)
) STRICT;

-- Tracking plans: each customer's plan as numbered versions, in canonical JSON (Postgres migration
-- 20261129000012_tracking_plans).
CREATE TABLE IF NOT EXISTS tracking_plans (
    customer_id   TEXT    NOT NULL REFERENCES customers (customer_id),
    version       INTEGER NOT NULL CHECK (version > 0),
    document      TEXT    NOT NULL,
    created_at_us INTEGER NOT NULL,
    PRIMARY KEY (customer_id, version)
) STRICT;

-- Customer-hours that received data; each is also its own aggregation job. The hour needs a final rollup
-- while generation > finalized_generation, a provisional one while generation > aggregated_generation,
-- unless generation <= refused_generation.
CREATE TABLE IF NOT EXISTS dirty_hours (
    customer_id           TEXT    NOT NULL,
    hour_start            INTEGER NOT NULL,
    generation            INTEGER NOT NULL DEFAULT 1,
    first_marked_at_us    INTEGER NOT NULL,
    last_marked_at_us     INTEGER NOT NULL,
    aggregated_generation INTEGER NOT NULL DEFAULT 0,
    finalized_generation  INTEGER NOT NULL DEFAULT 0,
    provisional_at_us     INTEGER,
    -- The worker that took the lease (for logs), and the lease itself: a random token issued with each
    -- lease, without which the lease cannot be renewed, failed or completed.
    lease_owner           TEXT,
    lease_token           INTEGER,
    leased_until_us       INTEGER,
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    -- Generations up to this one were refused (the hour's raw data may have expired) and are never leased
    -- again; the reason is shown in the hour's status until a later rollup of it is written.
    refused_generation    INTEGER NOT NULL DEFAULT 0,
    refused_reason        TEXT,
    refused_at_us         INTEGER,
    PRIMARY KEY (customer_id, hour_start)
) STRICT;

CREATE INDEX IF NOT EXISTS dirty_hours_unfinalized ON dirty_hours (hour_start) WHERE generation > finalized_generation;
CREATE INDEX IF NOT EXISTS dirty_hours_by_hour ON dirty_hours (hour_start, customer_id);

-- Per customer-hour and event type; a whole hour is replaced in one transaction.
CREATE TABLE IF NOT EXISTS hourly_rollups (
    customer_id    TEXT    NOT NULL,
    hour_start     INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    events         INTEGER NOT NULL,
    distinct_users INTEGER NOT NULL,
    users_sketch   BLOB    NOT NULL,
    revision       INTEGER NOT NULL,
    logic_version  INTEGER NOT NULL,
    is_final       INTEGER NOT NULL,
    final_as_of_us INTEGER,
    computed_at_us INTEGER NOT NULL,
    PRIMARY KEY (customer_id, hour_start, event_type)
) STRICT;

CREATE TABLE IF NOT EXISTS hourly_numeric_stats (
    customer_id   TEXT    NOT NULL,
    hour_start    INTEGER NOT NULL,
    event_type    TEXT    NOT NULL,
    property      TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    sum           REAL    NOT NULL,
    min           REAL    NOT NULL,
    max           REAL    NOT NULL,
    revision      INTEGER NOT NULL,
    logic_version INTEGER NOT NULL,
    PRIMARY KEY (customer_id, hour_start, event_type, property)
) STRICT;

-- The revision and status of each aggregated hour (also of hours whose rollup has no rows).
CREATE TABLE IF NOT EXISTS hour_revisions (
    customer_id    TEXT    NOT NULL,
    hour_start     INTEGER NOT NULL,
    revision       INTEGER NOT NULL,
    logic_version  INTEGER NOT NULL,
    events         INTEGER NOT NULL,
    computed_at_us INTEGER NOT NULL,
    is_final       INTEGER NOT NULL DEFAULT 0,
    final_as_of_us INTEGER,
    -- The hour's totals over all event types (exact distinct users, and their sketch).
    distinct_users INTEGER NOT NULL DEFAULT 0,
    users_sketch   BLOB    NOT NULL DEFAULT X'',
    PRIMARY KEY (customer_id, hour_start)
) STRICT;

-- The reconciliation ledger per customer-hour: received → accepted → stored → counted.
CREATE TABLE IF NOT EXISTS ledger (
    customer_id        TEXT    NOT NULL,
    hour_start         INTEGER NOT NULL,
    received           INTEGER NOT NULL,
    accepted           INTEGER NOT NULL,
    rejected           INTEGER NOT NULL,
    rejected_by_reason TEXT    NOT NULL DEFAULT '{}',
    throttled          INTEGER NOT NULL,
    stored             INTEGER NOT NULL,
    counted            INTEGER NOT NULL,
    is_final           INTEGER NOT NULL,
    counted_at_us      INTEGER NOT NULL,
    verified_at_us     INTEGER,
    -- What the tracking plan checked and found (`HourOutcomes::plan_checks_json`).
    plan_checks        TEXT    NOT NULL DEFAULT '[]',
    -- Accepted events dropped at ingestion: their user was under suppression after an erasure.
    erased             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, hour_start)
) STRICT;

CREATE INDEX IF NOT EXISTS ledger_by_hour ON ledger (hour_start, customer_id);

-- Per-user erasure requests: a person is named by HMAC-SHA256 under the deployment's erasure salt of the
-- customer id and the user id, never by the id itself (hourglass_core::erasure).
CREATE TABLE IF NOT EXISTS erasure_requests (
    request_id        TEXT    PRIMARY KEY,
    customer_id       TEXT    NOT NULL,
    user_hash         BLOB    NOT NULL CHECK (length(user_hash) = 32),
    requested_at_us   INTEGER NOT NULL,
    -- The person's events arriving before this are dropped at ingestion.
    suppress_until_us INTEGER NOT NULL,
    state             TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'erasing', 'done')),
    finished_at_us    INTEGER,
    lease_owner       TEXT,
    lease_token       INTEGER,
    leased_until_us   INTEGER
) STRICT;

CREATE UNIQUE INDEX IF NOT EXISTS erasure_requests_open ON erasure_requests (customer_id, user_hash)
    WHERE state <> 'done';
CREATE INDEX IF NOT EXISTS erasure_requests_suppressing ON erasure_requests (suppress_until_us);

-- A request's plan: the hours holding the person's events when it was planned, and each one's rollup
-- revision once erased and recomputed.
CREATE TABLE IF NOT EXISTS erasure_hours (
    request_id     TEXT    NOT NULL REFERENCES erasure_requests (request_id),
    customer_id    TEXT    NOT NULL,
    hour_start     INTEGER NOT NULL,
    events         INTEGER NOT NULL CHECK (events >= 0),
    revision       INTEGER,
    erased_at_us   INTEGER,
    PRIMARY KEY (request_id, hour_start)
) STRICT;

CREATE INDEX IF NOT EXISTS erasure_hours_by_hour ON erasure_hours (customer_id, hour_start);
