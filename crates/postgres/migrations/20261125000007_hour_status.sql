-- Whether an hour's current rollup is final, and since when, on the hour itself, so an hour whose rollup
-- has no rows (only rejected events) still reports its status to the query service.
ALTER TABLE hour_revisions
    ADD COLUMN is_final    boolean NOT NULL DEFAULT false,
    ADD COLUMN final_as_of timestamptz;

UPDATE hour_revisions AS revisions
SET is_final = rollups.is_final, final_as_of = rollups.final_as_of
FROM (
    SELECT customer_id, hour_start, bool_and(is_final) AS is_final, max(final_as_of) AS final_as_of
    FROM hourly_rollups GROUP BY customer_id, hour_start
) AS rollups
WHERE revisions.customer_id = rollups.customer_id AND revisions.hour_start = rollups.hour_start;

