//! `hourglass verify`: recount the raw store for a range of aggregated hours and print the ledger.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chrono::DateTime;
use hourglass_core::retention::RawRetention;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_postgres::{PostgresConfig, PostgresRollupStore};
use hourglass_proto::v1::RejectionReason;
use indicatif::{ProgressBar, ProgressStyle};

use crate::hour_range::HourRangeArgs;

/// Flags of `hourglass verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    range: HourRangeArgs,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs the verification; fails (exit status 1) if a final hour does not balance.
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let (from_unix, to_unix) = args.range.bounds()?;
    // Hours whose raw rows may have expired by the table's TTL are not recounted.
    let raw_retention = RawRetention::from_days(i64::from(args.cql.ttl_days));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let pool = args.postgres.open().await?;
    let raw_store = CqlRawStore::connect(&args.cql).await.context("failed to open the CQL raw store")?;
    let rollups = PostgresRollupStore::new(pool);
    let progress = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template("verifying {bar:40} {pos}/{len} hours  eta {eta}")?);
    let hours = hourglass_aggregator::verify::verify(
        &raw_store,
        &rollups,
        &raw_retention,
        args.range.customer(),
        from_unix,
        to_unix,
        now,
        |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        },
    )
    .await?;
    progress.finish_and_clear();
    println!(
        "{:<24} {:<21} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10}  STATUS",
        "CUSTOMER", "HOUR", "RECEIVED", "ACCEPTED", "REJECTED", "THROTTLED", "STORED", "COUNTED"
    );
    for verified in &hours {
        let row = &verified.ledger;
        let hour = DateTime::from_timestamp(row.customer_hour.hour_start, 0).unwrap_or_default();
        let balance = match (verified.recounted, row.balances(), row.is_final) {
            (false, _, _) => "not recounted: raw data may have expired",
            (true, true, _) => "ok",
            (true, false, true) => "MISMATCH",
            (true, false, false) => "mismatch (provisional)",
        };
        let status = match &verified.refused {
            Some(_) => format!("{balance}; late data refused"),
            None => balance.to_owned(),
        };
        println!(
            "{:<24} {:<21} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10}  {status}",
            row.customer_hour.customer_id.as_str(),
            hour.format("%Y-%m-%dT%H:%M:%SZ"),
            row.received,
            row.accepted,
            row.rejected,
            row.throttled,
            row.stored,
            row.counted
        );
    }
    let unbalanced = hours.iter().filter(|verified| verified.is_unbalanced_final()).count();
    let not_recounted = hours.iter().filter(|verified| !verified.recounted).count();
    println!("{} hour(s) verified, {unbalanced} final hour(s) do not balance", hours.len());
    if not_recounted > 0 {
        println!("{not_recounted} hour(s) not recounted, for each: {}", raw_retention.past_horizon_reason());
    }
    if let Some(line) = rejections_by_reason(hours.iter().map(|verified| &verified.ledger.rejected_by_reason)) {
        println!("rejected by reason: {line}");
    }
    if let Some(reason) = hours.iter().find_map(|verified| verified.refused.as_deref()) {
        let refused = hours.iter().filter(|verified| verified.refused.is_some()).count();
        println!("{refused} hour(s) refused late data, which will never be counted: {reason}");
    }
    if unbalanced > 0 {
        bail!(
            "{unbalanced} final hour(s) have stored != counted: re-aggregate them (reprocess) or restore the raw data"
        );
    }
    Ok(())
}

/// The range's rejections summed per reason, most frequent first, as `EVENT_ID_EMPTY 3, ...`; `None` when
/// nothing was rejected. A reason this build does not know (a newer collector's) is shown by number.
fn rejections_by_reason<'a>(hours: impl Iterator<Item = &'a BTreeMap<i32, u64>>) -> Option<String> {
    let mut totals = BTreeMap::<i32, u64>::new();
    for by_reason in hours {
        for (&reason, &events) in by_reason {
            *totals.entry(reason).or_default() += events;
        }
    }
    let mut totals: Vec<(i32, u64)> = totals.into_iter().filter(|&(_, events)| events > 0).collect();
    if totals.is_empty() {
        return None;
    }
    totals.sort_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(&right.0)));
    let named = totals.iter().map(|&(reason, events)| match RejectionReason::try_from(reason) {
        Ok(known) => format!("{} {events}", known.as_str_name().trim_start_matches("REJECTION_REASON_")),
        Err(_) => format!("reason {reason} {events}"),
    });
    Some(named.collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_summed_over_hours_most_frequent_first_and_unknown_reasons_keep_their_number() {
        let future = RejectionReason::OccurredAtInFuture as i32;
        let empty_id = RejectionReason::EventIdEmpty as i32;
        let first = BTreeMap::from([(future, 2), (empty_id, 1)]);
        let second = BTreeMap::from([(empty_id, 4), (999, 1), (future, 0)]);
        assert_eq!(
            rejections_by_reason([&first, &second].into_iter()).as_deref(),
            Some("EVENT_ID_EMPTY 5, OCCURRED_AT_IN_FUTURE 2, reason 999 1")
        );
        assert_eq!(rejections_by_reason([&BTreeMap::from([(future, 0)])].into_iter()), None);
        assert_eq!(rejections_by_reason(std::iter::empty()), None);
    }
}
