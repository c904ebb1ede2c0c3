//! `verify`: recount the raw store for aggregated hours and compare with what the rollups counted.
//!
//! The aggregation job writes stored = counted by construction (both come from the rows it read). This
//! recount is independent: rows lost from the raw store afterwards (an operator's mistake, a TTL set too
//! short, a failed restore) make stored < counted, and a final hour that does not balance is the alert.

use hourglass_core::raw_store::{EventVisitor, RawStore, RawStoreError};
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

/// Recounts every aggregated hour starting in `[from, to)` (of one customer, or all), records the
/// recount in the ledger and returns the updated rows; `on_progress(done, total)` after each hour.
pub async fn verify<R: RawStore, S: RollupStore + RollupReader>(
    raw_store: &R,
    rollup_store: &S,
    customer_id: Option<&str>,
    from_unix: i64,
    to_unix: i64,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<Vec<LedgerRow>, VerifyError> {
    let hours = rollup_store.ledger(customer_id, from_unix, to_unix).await?;
    let mut verified = Vec::with_capacity(hours.len());
    for (index, row) in hours.iter().enumerate() {
        let customer_hour = &row.customer_hour;
        let mut stored = 0u64;
        for bucket in 0..raw_store.bucket_count() {
            let counted = raw_store
                .fold_bucket(customer_hour.customer_id.as_str(), customer_hour.hour_start, bucket, RowCount(0))
                .await?;
            stored += counted.0;
        }
        if let Some(updated) = rollup_store.record_recount(customer_hour, stored).await? {
            if !updated.balances() {
                tracing::warn!(
                    customer_id = customer_hour.customer_id.as_str(),
                    hour_start = customer_hour.hour_start,
                    stored = updated.stored,
                    counted = updated.counted,
                    "ledger does not balance: stored and counted differ"
                );
            }
            verified.push(updated);
        }
        on_progress(index + 1, hours.len());
    }
    let unbalanced = verified.iter().filter(|row| row.is_final && !row.balances()).count();
    metrics::gauge!(crate::telemetry::LEDGER_UNBALANCED_HOURS).set(unbalanced as f64);
    Ok(verified)
}
