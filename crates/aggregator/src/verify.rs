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

/// The hours the periodic verification recounts at `now_unix`: those that started in `[from, to)`, `to`
/// being the start of the hour that is `age_secs` old and `from` where the previous run stopped (on the
/// first run, `interval_secs` in whole hours before `to`). `None` when no hour reached the age since.
pub fn next_slice(previous_to: Option<i64>, now_unix: i64, age_secs: i64, interval_secs: u64) -> Option<(i64, i64)> {
    let to = hourglass_core::hour::hour_start(now_unix.saturating_sub(age_secs));
    let first_span_hours = i64::try_from(interval_secs.div_ceil(3600).max(1)).unwrap_or(i64::MAX);
    let from = previous_to.unwrap_or_else(|| to.saturating_sub(first_span_hours.saturating_mul(3600)));
    (from < to).then_some((from, to))
}

/// Every `--ledger-verify-interval-secs` until `shutdown`, recounts the hours that reached
/// `--ledger-verify-age-hours` since the last run ([`next_slice`]), which sets
/// `hourglass_ledger_unbalanced_final_hours` to the slice's unbalanced final hours (the alert; each is
/// logged, and its recount stays in the ledger for `hourglass verify` and `GetLedger`). A slice that
/// fails is tried again, whole, at the next tick. Off when the interval is 0.
pub async fn run_periodically<R: RawStore, S: RollupStore + RollupReader>(
    config: &crate::AggregatorConfig,
    raw_store: &R,
    rollup_store: &S,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    if config.ledger_verify_interval_secs == 0 {
        return;
    }
    let age_secs = i64::try_from(config.ledger_verify_age_hours.saturating_mul(3600)).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(config.ledger_verify_interval_secs));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous_to = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let Some((from_unix, to_unix)) =
            next_slice(previous_to, now_unix, age_secs, config.ledger_verify_interval_secs)
        else {
            continue;
        };
        let verifying =
            verify(raw_store, rollup_store, &config.raw_retention, None, from_unix, to_unix, now_unix, |_, _| {});
        let verified = tokio::select! {
            () = shutdown.cancelled() => return,
            verified = verifying => verified,
        };
        match verified {
            Ok(hours) => {
                let unbalanced = hours.iter().filter(|hour| hour.is_unbalanced_final()).count();
                tracing::info!(from_unix, to_unix, hours = hours.len(), unbalanced, "ledger verified");
                previous_to = Some(to_unix);
            }
            Err(error) => tracing::warn!(from_unix, to_unix, %error, "ledger verification failed; retried next time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_slice;

    const DAY: i64 = 86_400;
    /// An instant 20 minutes into an hour (1_800_000_000 is a whole hour: 500_000 × 3600).
    const NOW: i64 = 1_800_000_000 + 1200;

    #[test]
    fn the_first_slice_is_one_interval_of_hours_that_reached_the_age() {
        let (from, to) = next_slice(None, NOW, DAY, 3600).unwrap();
        assert_eq!(to, NOW - 1200 - DAY, "the start of the hour that is a day old");
        assert_eq!(to - from, 3600);
        let (from, to) = next_slice(None, NOW, DAY, 5400).unwrap();
        assert_eq!(to - from, 7200, "an interval that is not whole hours is rounded up");
    }

    #[test]
    fn each_hour_is_in_exactly_one_slice() {
        let (_, first_to) = next_slice(None, NOW, DAY, 3600).unwrap();
        assert_eq!(next_slice(Some(first_to), NOW + 600, DAY, 3600), None, "no hour reached the age since");
        let (from, to) = next_slice(Some(first_to), NOW + 3 * 3600, DAY, 3600).unwrap();
        assert_eq!((from, to), (first_to, first_to + 3 * 3600), "a late run takes every hour it missed");
    }
}
