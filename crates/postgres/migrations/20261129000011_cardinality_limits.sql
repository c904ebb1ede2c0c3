-- Per-customer cardinality limits (distinct event types per hour, distinct property names per event type
-- per hour); NULL means the collector's default.
ALTER TABLE customer_limits
    ADD COLUMN max_event_types_per_hour integer CHECK (max_event_types_per_hour > 0),
    ADD COLUMN max_property_names_per_event_type integer CHECK (max_property_names_per_event_type > 0);
