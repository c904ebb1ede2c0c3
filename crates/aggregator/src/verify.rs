//! `verify`: recount the raw store for aggregated hours and compare with what the rollups counted.
//!
//! The aggregation job writes stored = counted by construction (both come from the rows it read). This
//! recount is independent: rows lost from the raw store afterwards (an operator's mistake, a TTL set too
//! short, a failed restore) make stored < counted, and a final hour that does not balance is the alert.
//!
//! Hours past their horizon (`hourglass_core::retention`) are not recounted: their raw rows may have
//! expired as designed, so a recount would measure the expiry, not the rollup, which was computed while
//! they were all there. Each hour also reports whether late data for it was refused for that reason.

use hourglass_core::raw_store::{EventVisitor, RawStore, RawStoreError};
use hourglass_core::retention::RawRetention;
use hourglass_core::rollup_reader::RollupReader;
use hourglass_core::rollup_store::{LedgerRow, RollupStore, RollupStoreError};

/// Why verification stopped.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The raw store could not be read.
    #[error(transparent)]
    RawStore(#[from] RawStoreError),
    /// The ledger could not be read or updated.
    #[error(transparent)]
    RollupStore(#[from] RollupStoreError),
}

/// Counts rows, reading only what a rollup reads (a recount needs no property maps or ids).
struct RowCount(u64);

impl EventVisitor for RowCount {
    fn visit(&mut self, _event_type: &str, _user_id: Option<&str>, _numbers: &mut dyn Iterator<Item = (&str, f64)>) {
        self.0 += 1;
    }
}

/// One aggregated hour as verification left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHour {
    /// The hour's ledger row: `stored` is this run's recount if `recounted`, else the one before.
    pub ledger: LedgerRow,
    /// Whether the raw store was recounted: not for an hour past its horizon.
    pub recounted: bool,
    /// Why data marked after the hour's rollup was refused, if it was (its raw data may have expired).
    pub refused: Option<String>,
}

impl VerifiedHour {
    /// A final hour whose recount differs from what its rollup counted: the alert.
    pub fn is_unbalanced_final(&self) -> bool {
        self.recounted && self.ledger.is_final && !self.ledger.balances()
    }
}

/// Recounts every aggregated hour starting in `[from, to)` (of one customer, or all) that is inside its
/// horizon at `now_unix`, records the recount in the ledger and returns every hour's row;
/// `on_progress(done, total)` after each hour.
#[allow(clippy::too_many_arguments)]
pub async fn verify<R: RawStore, S: RollupStore + RollupReader>(
    raw_store: &R,
    rollup_store: &S,
    raw_retention: &RawRetention,
    customer_id: Option<&str>,
    from_unix: i64,
    to_unix: i64,
    now_unix: i64,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<Vec<VerifiedHour>, VerifyError> {
    let hours = rollup_store.ledger(customer_id, from_unix, to_unix).await?;
    let mut verified = Vec::with_capacity(hours.len());
    for (index, row) in hours.iter().enumerate() {
        let customer_hour = &row.customer_hour;
        let customer = customer_hour.customer_id.as_str();
        let hour_start = customer_hour.hour_start;
        let refused = rollup_store
            .hour_statuses(customer, hour_start, hour_start + hourglass_core::hour::SECONDS_PER_HOUR)
            .await?
            .into_iter()
            .find_map(|status| status.refused);
        if raw_retention.is_past_horizon(hour_start, now_unix) {
            verified.push(VerifiedHour { ledger: row.clone(), recounted: false, refused });
            on_progress(index + 1, hours.len());
            continue;
        }
        let mut stored = 0u64;
        for bucket in 0..raw_store.bucket_count() {
            let counted = raw_store.fold_bucket(customer, hour_start, bucket, RowCount(0)).await?;
            stored += counted.0;
        }
        if let Some(updated) = rollup_store.record_recount(customer_hour, stored).await? {
            if !updated.balances() {
                tracing::warn!(
                    customer_id = customer,
                    hour_start,
                    stored = updated.stored,
                    counted = updated.counted,
                    "ledger does not balance: stored and counted differ"
                );
            }
            verified.push(VerifiedHour { ledger: updated, recounted: true, refused });
        }
        on_progress(index + 1, hours.len());
    }
    let unbalanced = verified.iter().filter(|hour| hour.is_unbalanced_final()).count();
    metrics::gauge!(crate::telemetry::LEDGER_UNBALANCED_HOURS).set(unbalanced as f64);
    Ok(verified)
}
