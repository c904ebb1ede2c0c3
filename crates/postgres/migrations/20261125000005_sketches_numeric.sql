-- Mergeable distinct-user sketches (HyperLogLog, precision 12, see hourglass-core's hll.rs) per
-- customer-hour and event type, so longer periods' uniques merge hourly sketches without raw data.
ALTER TABLE hourly_rollups ADD COLUMN users_sketch bytea NOT NULL DEFAULT '\x';

-- Numeric properties per customer-hour, event type and property name: count, sum, min and max.
-- Replaced with the hour's rollup in the same transaction.
CREATE TABLE hourly_numeric_stats (
    customer_id   text             NOT NULL,
    hour_start    timestamptz      NOT NULL,
    event_type    text             NOT NULL,
    property      text             NOT NULL,
    count         bigint           NOT NULL,
    sum           double precision NOT NULL,
    min           double precision NOT NULL,
    max           double precision NOT NULL,
    revision      integer          NOT NULL,
    logic_version integer          NOT NULL,
    PRIMARY KEY (customer_id, hour_start, event_type, property)
);
