-- Provisional rollups of open hours. An hour needs a final rollup while its generation is ahead of the
-- generation last finalized (even if a provisional run already saw that generation), and a provisional
-- one, at most every interval, while its generation is ahead of the generation last aggregated at all.
ALTER TABLE dirty_hours
    ADD COLUMN finalized_generation bigint NOT NULL DEFAULT 0,
    ADD COLUMN provisional_at       timestamptz;

UPDATE dirty_hours SET finalized_generation = aggregated_generation;

DROP INDEX dirty_hours_pending;
CREATE INDEX dirty_hours_unfinalized ON dirty_hours (hour_start) WHERE generation > finalized_generation;
