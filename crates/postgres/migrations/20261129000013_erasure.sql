-- Per-user erasure (hourglass_core::erasure): requests naming a person by a salted hash of their user id,
-- never the id itself, and the hours each one erased and recomputed. Admin keys may record them.

ALTER TABLE api_keys DROP CONSTRAINT api_keys_scope_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scope_check CHECK (scope IN ('ingest', 'query', 'admin'));

CREATE TABLE erasure_requests (
    request_id     text PRIMARY KEY,
    customer_id    text NOT NULL,
    -- HMAC-SHA256 under the deployment's erasure salt of the customer id and the user id.
    user_hash      bytea NOT NULL CHECK (octet_length(user_hash) = 32),
    requested_at   timestamptz NOT NULL DEFAULT now(),
    -- The person's events arriving before this are dropped at ingestion.
    suppress_until timestamptz NOT NULL,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'erasing', 'done')),
    finished_at    timestamptz,
    -- The run working on it, as dirty_hours leases an hour: a new token per lease.
    lease_owner    text,
    lease_token    bigint,
    leased_until   timestamptz
);

-- Asking twice for a person whose erasure is not done yet returns the open request.
CREATE UNIQUE INDEX erasure_requests_open ON erasure_requests (customer_id, user_hash) WHERE state <> 'done';
CREATE INDEX erasure_requests_suppressing ON erasure_requests (suppress_until);

-- A request's plan: the hours holding the person's events when it was planned, and each one's rollup
-- revision once erased and recomputed.
CREATE TABLE erasure_hours (
    request_id  text NOT NULL REFERENCES erasure_requests (request_id),
    customer_id text NOT NULL,
    hour_start  timestamptz NOT NULL,
    events      bigint NOT NULL CHECK (events >= 0),
    revision    integer,
    erased_at   timestamptz,
    PRIMARY KEY (request_id, hour_start)
);

CREATE INDEX erasure_hours_by_hour ON erasure_hours (customer_id, hour_start);
