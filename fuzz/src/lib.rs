//! What the fuzz targets share: the sinks a collector needs to run one batch in memory.
//!
//! The targets call the real code of the crates (`fuzz_targets/`, one per surface a client or a broker
//! reaches); nothing here repeats their logic. A fuzzer runs thousands of inputs a second, so the
//! collector appends to [`CapturedLog`], which keeps the records for the target to check, instead of
//! Kafka or `log.db`, and looks up no key ([`NoKeys`]: the target hands `begin_batch` its principal, as
//! the service does after authenticating).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use hourglass_core::api_key::{ApiKey, KeyHash, KeyId, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{Appended, EventLog, EventLogError, LogRecord, Topic};
use hourglass_core::key_store::{CustomerLimits, KeyGrant, KeyListing, KeyStore, KeyStoreError};
use parking_lot::Mutex;

/// An event log that keeps what is appended, in order, and confirms at once.
#[derive(Default)]
pub struct CapturedLog {
    records: Mutex<Vec<(Topic, LogRecord)>>,
}

impl CapturedLog {
    /// The records appended so far, emptying the log.
    pub fn take(&self) -> Vec<(Topic, LogRecord)> {
        std::mem::take(&mut self.records.lock())
    }
}

impl EventLog for CapturedLog {
    fn append(&self, topic: Topic, record: LogRecord) -> BoxFuture<'static, Result<Appended, EventLogError>> {
        let mut records = self.records.lock();
        records.push((topic, record));
        let offset = records.len() as i64 - 1;
        futures::future::ready(Ok(Appended { partition: 0, offset })).boxed()
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), EventLogError>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<(), EventLogError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// A key store that knows no key: `begin_batch` is given its principal and never asks.
pub struct NoKeys;

fn unused<T: Send>() -> impl Future<Output = Result<T, KeyStoreError>> + Send {
    futures::future::ready(Err(KeyStoreError::InvalidData("the fuzz targets keep no keys".to_owned())))
}

impl KeyStore for NoKeys {
    fn find_key(&self, _hash: KeyHash) -> impl Future<Output = Result<Option<KeyGrant>, KeyStoreError>> + Send {
        futures::future::ready(Ok(None))
    }

    fn create_key(
        &self,
        _customer_id: &CustomerId,
        _scope: Scope,
        _name: &str,
    ) -> impl Future<Output = Result<ApiKey, KeyStoreError>> + Send {
        unused()
    }

    fn revoke_key(&self, _key_id: &KeyId) -> impl Future<Output = Result<bool, KeyStoreError>> + Send {
        unused()
    }

    fn list_keys(
        &self,
        _customer_id: Option<&CustomerId>,
    ) -> impl Future<Output = Result<Vec<KeyListing>, KeyStoreError>> + Send {
        unused()
    }

    fn customer_limits(
        &self,
        _customer_id: &CustomerId,
    ) -> impl Future<Output = Result<CustomerLimits, KeyStoreError>> + Send {
        futures::future::ready(Ok(CustomerLimits::default()))
    }

    fn set_customer_limits(
        &self,
        _customer_id: &CustomerId,
        _limits: CustomerLimits,
    ) -> impl Future<Output = Result<(), KeyStoreError>> + Send {
        unused()
    }

    fn check_ready(&self) -> impl Future<Output = Result<(), KeyStoreError>> + Send {
        futures::future::ready(Ok(()))
    }
}

/// A shared handle on a fresh captured log.
pub fn captured_log() -> Arc<CapturedLog> {
    Arc::new(CapturedLog::default())
}

/// A plan store with no plan for anyone: the collector checks no event against a plan, as for a
/// customer that never pushed one.
pub struct NoPlans;

impl hourglass_core::tracking_plan::store::PlanStore for NoPlans {
    async fn push_plan(
        &self,
        _customer_id: &CustomerId,
        _document: &hourglass_core::tracking_plan::PlanDocument,
    ) -> Result<hourglass_core::tracking_plan::store::PushOutcome, hourglass_core::tracking_plan::store::PlanStoreError>
    {
        Err(hourglass_core::tracking_plan::store::PlanStoreError::InvalidData("the fuzz targets keep no plans".into()))
    }

    async fn current_version(
        &self,
        _customer_id: &CustomerId,
    ) -> Result<u32, hourglass_core::tracking_plan::store::PlanStoreError> {
        Ok(0)
    }

    async fn plan(
        &self,
        _customer_id: &CustomerId,
        _version: Option<u32>,
    ) -> Result<
        Option<hourglass_core::tracking_plan::store::StoredPlan>,
        hourglass_core::tracking_plan::store::PlanStoreError,
    > {
        Ok(None)
    }

    async fn plan_history(
        &self,
        _customer_id: &CustomerId,
    ) -> Result<
        Vec<hourglass_core::tracking_plan::store::StoredPlan>,
        hourglass_core::tracking_plan::store::PlanStoreError,
    > {
        Ok(Vec::new())
    }
}
