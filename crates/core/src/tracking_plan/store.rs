//! The [`PlanStore`] seam: each customer's tracking plan as numbered versions (Postgres in distributed
//! mode, `meta.db` in standalone mode).
//!
//! Versions start at 1 and only grow, so a customer's current version number is also the revision a
//! cache compares (the collector's plan cache asks for it when its copy is older than its TTL, and
//! fetches the plan only when it moved). A push creates version N+1 only when the plan's canonical form
//! differs from version N: pushing the same file twice, however formatted, is not a change. Concurrent
//! pushes for one customer are serialized by the store, so no two get the same number.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::document::PlanDocument;
use crate::BoxError;
use crate::customer::CustomerId;

/// Errors from a plan store.
#[derive(Debug, thiserror::Error)]
pub enum PlanStoreError {
    /// The store could not be reached or failed; the caller may retry.
    #[error("plan store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store's schema is missing or behind this build: an operator must migrate.
    #[error("plan store schema problem: {0}")]
    Schema(#[source] BoxError),
    /// The store holds a plan this version cannot read.
    #[error("plan store holds invalid data: {0}")]
    InvalidData(String),
}

/// One stored version of a customer's plan.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPlan {
    /// The version, from 1.
    pub version: u32,
    /// The plan.
    pub document: PlanDocument,
    /// When this version was pushed.
    pub created_at: DateTime<Utc>,
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The plan differed from the current version (or there was none): this version was created.
    Created(u32),
    /// The plan is the current version's; nothing was written.
    Unchanged(u32),
}

impl PushOutcome {
    /// The version that is current after the push.
    pub fn version(self) -> u32 {
        match self {
            PushOutcome::Created(version) | PushOutcome::Unchanged(version) => version,
        }
    }
}

/// Customers' tracking plans, versioned.
pub trait PlanStore: Send + Sync + 'static {
    /// Stores `document` as the customer's next version, unless it is the current one.
    fn push_plan(
        &self,
        customer_id: &CustomerId,
        document: &PlanDocument,
    ) -> impl Future<Output = Result<PushOutcome, PlanStoreError>> + Send;

    /// The customer's current version number: 0 when it has no plan. The revision a cache checks.
    fn current_version(&self, customer_id: &CustomerId) -> impl Future<Output = Result<u32, PlanStoreError>> + Send;

    /// One version of the customer's plan; the current one when `version` is `None`.
    fn plan(
        &self,
        customer_id: &CustomerId,
        version: Option<u32>,
    ) -> impl Future<Output = Result<Option<StoredPlan>, PlanStoreError>> + Send;

    /// Every version of the customer's plan, oldest first.
    fn plan_history(
        &self,
        customer_id: &CustomerId,
    ) -> impl Future<Output = Result<Vec<StoredPlan>, PlanStoreError>> + Send;
}

/// Parses a stored plan's canonical form; a store's rows were checked when pushed, so a failure means
/// the row was written by something else.
pub fn parse_stored(customer_id: &CustomerId, version: u32, json: &str) -> Result<PlanDocument, PlanStoreError> {
    PlanDocument::parse(json)
        .map_err(|error| PlanStoreError::InvalidData(format!("plan v{version} of customer {customer_id}: {error}")))
}
