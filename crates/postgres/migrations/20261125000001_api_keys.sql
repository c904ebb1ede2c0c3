-- Customers, their API keys (hashed) and their limits.

CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    -- The key's public id (`hgk_` + 8 characters), shown in listings and used to revoke it.
    key_id      text PRIMARY KEY,
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash    bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    customer_id text NOT NULL REFERENCES customers (customer_id),
    scope       text NOT NULL CHECK (scope IN ('ingest', 'query')),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_by_customer ON api_keys (customer_id);

-- Limits that differ from the collector's defaults; NULL means "use the default".
CREATE TABLE customer_limits (
    customer_id       text PRIMARY KEY REFERENCES customers (customer_id),
    events_per_second integer CHECK (events_per_second > 0),
    burst_events      integer CHECK (burst_events > 0),
    kafka_key_spread  integer CHECK (kafka_key_spread BETWEEN 1 AND 1024),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
