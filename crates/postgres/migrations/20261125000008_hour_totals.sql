-- Each hour's totals over all event types: exact distinct users (per-type counts cannot be added up: one
-- user does several things) and their sketch, so reports over all types read one row per hour instead of
-- merging one sketch per hour and type. Written with the hour's rollup, in the same transaction; hours
-- rolled up before (logic version 1) get them from `hourglass reprocess`.
ALTER TABLE hour_revisions
    ADD COLUMN distinct_users bigint NOT NULL DEFAULT 0,
    ADD COLUMN users_sketch   bytea  NOT NULL DEFAULT '\x';
