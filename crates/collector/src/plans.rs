//! The collector's tracking plans: each customer's current plan version, compiled once and cached like
//! keys are (README: Tracking plans).
//!
//! A cached plan is used for `--plan-cache-ttl-secs`; the first batch after that asks the store for the
//! customer's current version number (its revision: versions only grow) and fetches and compiles the plan
//! only when the number moved, so a pushed version applies within the TTL, with no restart, and an
//! unchanged one costs one small query per customer and TTL. While one batch revalidates an entry, the
//! customer's other batches keep using it rather than queueing on the store. If the store cannot answer,
//! the plan already cached stays in use (and is re-asked after another TTL); a customer never seen has
//! no plan to fall back on, and its batch is answered UNAVAILABLE with a retry delay, as when its key
//! cannot be checked, so enforcement never silently lapses.
//!
//! Entries are per customer, and only authenticated customers reach the cache, so its size is bounded
//! by the customers that have keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::store::{PlanStore, PlanStoreError};
use hourglass_core::tracking_plan::{CompiledPlan, PlanMode};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::telemetry;

/// How plans are cached.
#[derive(Clone, Debug, clap::Args)]
pub struct PlanCacheConfig {
    /// How long a customer's tracking plan is used before the collector checks the store for a newer
    /// version; a pushed version applies within this.
    #[arg(
        long = "plan-cache-ttl-secs",
        env = "HOURGLASS_PLAN_CACHE_TTL_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub plan_cache_ttl_secs: u64,
}

/// Why a batch's plan could not be known.
#[derive(Debug, thiserror::Error)]
#[error("the tracking plan of customer {customer_id} could not be read: {source}")]
pub struct PlanUnavailable {
    customer_id: CustomerId,
    #[source]
    source: PlanStoreError,
}

struct CachedPlan {
    /// The store's version number when last checked (0: no plan).
    version: u32,
    /// The compiled plan; `None` with no plan or a plan whose mode is `off`.
    plan: Option<Arc<CompiledPlan>>,
    checked_at: Instant,
    /// A batch is asking the store for this customer now.
    revalidating: bool,
}

/// Customers' compiled plans, with the TTL and revision check of the module doc.
pub struct PlanCache<P> {
    store: Arc<P>,
    ttl: Duration,
    entries: Mutex<HashMap<CustomerId, CachedPlan>>,
}

impl<P: PlanStore> PlanCache<P> {
    /// An empty cache over `store`.
    pub fn new(store: Arc<P>, config: &PlanCacheConfig) -> Self {
        Self { store, ttl: Duration::from_secs(config.plan_cache_ttl_secs), entries: Mutex::new(HashMap::new()) }
    }

    /// The plan to check the customer's batch against: `None` when it has none or its mode is `off`.
    pub async fn plan_for(&self, customer_id: &CustomerId) -> Result<Option<Arc<CompiledPlan>>, PlanUnavailable> {
        let now = Instant::now();
        let known_version = {
            let mut entries = self.entries.lock();
            match entries.get_mut(customer_id) {
                Some(entry) if entry.revalidating || now.duration_since(entry.checked_at) < self.ttl => {
                    return Ok(entry.plan.clone());
                }
                Some(entry) => {
                    entry.revalidating = true;
                    Some(entry.version)
                }
                None => None,
            }
        };
        let refreshed = self.refresh(customer_id, known_version).await;
        let mut entries = self.entries.lock();
        match refreshed {
            Ok(Some((version, plan))) => {
                entries.insert(
                    customer_id.clone(),
                    CachedPlan { version, plan: plan.clone(), checked_at: Instant::now(), revalidating: false },
                );
                Ok(plan)
            }
            Ok(None) => {
                let entry = entries.get_mut(customer_id).expect("only a known entry is confirmed");
                entry.checked_at = Instant::now();
                entry.revalidating = false;
                Ok(entry.plan.clone())
            }
            Err(source) => {
                metrics::counter!(telemetry::PLAN_STORE_ERRORS_TOTAL).increment(1);
                match entries.get_mut(customer_id) {
                    Some(entry) => {
                        tracing::warn!(%source, customer_id = customer_id.as_str(), version = entry.version,
                            "tracking plan store unavailable; the cached plan version stays in use");
                        // Asked again after another TTL, not by every batch meanwhile.
                        entry.checked_at = Instant::now();
                        entry.revalidating = false;
                        Ok(entry.plan.clone())
                    }
                    None => Err(PlanUnavailable { customer_id: customer_id.clone(), source }),
                }
            }
        }
    }

    /// Asks the store: `Ok(None)` when the version is still `known_version`, else the current version
    /// and its compiled plan.
    async fn refresh(
        &self,
        customer_id: &CustomerId,
        known_version: Option<u32>,
    ) -> Result<Option<(u32, Option<Arc<CompiledPlan>>)>, PlanStoreError> {
        let version = self.store.current_version(customer_id).await?;
        if known_version == Some(version) {
            return Ok(None);
        }
        if version == 0 {
            return Ok(Some((0, None)));
        }
        let Some(stored) = self.store.plan(customer_id, Some(version)).await? else {
            return Err(PlanStoreError::InvalidData(format!("plan v{version} of {customer_id} vanished")));
        };
        let compiled = CompiledPlan::compile(stored.version, &stored.document).map_err(|error| {
            PlanStoreError::InvalidData(format!("plan v{version} of {customer_id} does not compile: {error}"))
        })?;
        metrics::counter!(telemetry::PLANS_COMPILED_TOTAL).increment(1);
        tracing::info!(
            customer_id = customer_id.as_str(),
            version,
            mode = stored.document.mode.as_str(),
            "tracking plan version loaded"
        );
        let plan = (stored.document.mode != PlanMode::Off).then(|| Arc::new(compiled));
        Ok(Some((stored.version, plan)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hourglass_core::tracking_plan::PlanDocument;
    use hourglass_core::tracking_plan::store::{PushOutcome, StoredPlan};

    use super::*;

    /// A store in memory that counts its reads and can be made to fail.
    #[derive(Default)]
    struct MemoryPlans {
        versions: Mutex<Vec<PlanDocument>>,
        reads: AtomicUsize,
        failing: std::sync::atomic::AtomicBool,
    }

    impl MemoryPlans {
        fn check(&self) -> Result<(), PlanStoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(PlanStoreError::Unavailable("down".into()));
            }
            Ok(())
        }
    }

    impl PlanStore for MemoryPlans {
        async fn push_plan(&self, _: &CustomerId, document: &PlanDocument) -> Result<PushOutcome, PlanStoreError> {
            let mut versions = self.versions.lock();
            versions.push(document.clone());
            Ok(PushOutcome::Created(versions.len() as u32))
        }

        async fn current_version(&self, _: &CustomerId) -> Result<u32, PlanStoreError> {
            self.check()?;
            Ok(self.versions.lock().len() as u32)
        }

        async fn plan(&self, _: &CustomerId, version: Option<u32>) -> Result<Option<StoredPlan>, PlanStoreError> {
            self.check()?;
            let versions = self.versions.lock();
            let version = version.unwrap_or(versions.len() as u32);
            Ok(versions.get(version as usize - 1).map(|document| StoredPlan {
                version,
                document: document.clone(),
                created_at: chrono::Utc::now(),
            }))
        }

        async fn plan_history(&self, _: &CustomerId) -> Result<Vec<StoredPlan>, PlanStoreError> {
            unreachable!("the cache never lists history")
        }
    }

    fn plan(mode: &str) -> PlanDocument {
        PlanDocument::parse(&format!(r#"{{"mode": "{mode}", "event_types": {{"view": {{}}}}}}"#)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_plan_is_revalidated_after_its_ttl_and_recompiled_only_when_its_version_moved() {
        let store = Arc::new(MemoryPlans::default());
        let cache = PlanCache::new(Arc::clone(&store), &PlanCacheConfig { plan_cache_ttl_secs: 10 });
        let acme = CustomerId::new("acme").unwrap();

        assert!(cache.plan_for(&acme).await.unwrap().is_none(), "no plan yet");
        store.push_plan(&acme, &plan("enforce")).await.unwrap();
        assert!(cache.plan_for(&acme).await.unwrap().is_none(), "within the TTL the cached answer holds");
        let reads = store.reads.load(Ordering::SeqCst);

        tokio::time::advance(Duration::from_secs(11)).await;
        let loaded = cache.plan_for(&acme).await.unwrap().expect("v1 after the TTL");
        assert_eq!(loaded.version(), 1);
        assert_eq!(store.reads.load(Ordering::SeqCst), reads + 2, "the version, then the plan");

        tokio::time::advance(Duration::from_secs(11)).await;
        let same = cache.plan_for(&acme).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&loaded, &same), "an unchanged version is not compiled again");
        assert_eq!(store.reads.load(Ordering::SeqCst), reads + 3, "only the version was asked");

        store.push_plan(&acme, &plan("off")).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.plan_for(&acme).await.unwrap().is_none(), "a plan in mode off checks nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_keeps_the_cached_plan_and_refuses_only_an_unknown_customer() {
        let store = Arc::new(MemoryPlans::default());
        let cache = PlanCache::new(Arc::clone(&store), &PlanCacheConfig { plan_cache_ttl_secs: 10 });
        let (acme, globex) = (CustomerId::new("acme").unwrap(), CustomerId::new("globex").unwrap());
        store.push_plan(&acme, &plan("warn")).await.unwrap();
        assert_eq!(cache.plan_for(&acme).await.unwrap().unwrap().version(), 1);

        store.failing.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(cache.plan_for(&acme).await.unwrap().unwrap().version(), 1, "the cached version stays");
        let reads = store.reads.load(Ordering::SeqCst);
        assert!(cache.plan_for(&acme).await.is_ok());
        assert_eq!(store.reads.load(Ordering::SeqCst), reads, "not re-asked before another TTL");
        assert!(cache.plan_for(&globex).await.is_err(), "a customer never seen has nothing to fall back on");
    }
}
