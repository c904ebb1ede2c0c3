//! Tracking plans: the event types a customer declares, with each type's properties, their types and
//! constraints, stored as numbered versions and applied by the collector (README: Tracking plans).
//!
//! - [`document`]: the plan as written (JSON, schema in `docs/tracking-plan.schema.json`), parsed
//!   strictly, checked for sense, and put in a canonical form (a push creates a version only when that
//!   form changed).
//! - [`compiled`]: a version compiled for the collector's hot path and the check of one event against it,
//!   giving the first rule it broke and whether that rejects or warns.
//! - [`store`]: the [`PlanStore`](store::PlanStore) seam: versions per customer (Postgres, `meta.db`).
//! - [`diff`]: what changed between two versions, for `hourglass plans diff`.

pub mod compiled;
pub mod diff;
pub mod document;
mod name_table;
mod pattern;
pub mod store;

pub use compiled::{CompiledPlan, EventCheck, PlanRule, PlanValue, PlanViolation, ViolationAction};
pub use document::{PlanDocument, PlanDocumentError, PlanMode, PropertyType, UndeclaredPolicy};

#[cfg(test)]
mod tests;
