-- Tracking plans (issue 27): each customer's plan as numbered versions, in their canonical JSON form
-- (`hourglass_core::tracking_plan::document`). Versions start at 1 and only grow; a push adds one only
-- when the canonical form changed.

CREATE TABLE tracking_plans (
    customer_id text        NOT NULL REFERENCES customers (customer_id),
    version     integer     NOT NULL CHECK (version > 0),
    document    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, version)
);

-- Per customer-hour: the events each plan version checked and, per event type and rule, those it
-- rejected or warned about (`HourOutcomes::plan_checks_json`).
ALTER TABLE ledger ADD COLUMN plan_checks jsonb NOT NULL DEFAULT '[]';
