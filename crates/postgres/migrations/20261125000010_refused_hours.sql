-- Hours the aggregator refused because their raw data may have expired (see hourglass-core's
-- retention.rs): every generation up to refused_generation is never leased again, final or provisional,
-- so an hour whose data can no longer be aggregated correctly is not retried for ever. The hour's rollup
-- stays as it was; refused_reason tells its status why data marked after that rollup is not in it.
-- Data marked later bumps the generation past refused_generation, and the hour is a job again.
ALTER TABLE dirty_hours
    ADD COLUMN refused_generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN refused_reason     text,
    ADD COLUMN refused_at         timestamptz;
