//! `hourglass reprocess`: recompute a range of hours with the current aggregation logic.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chrono::DateTime;
use hourglass_aggregator::AggregatorConfig;
use hourglass_core::retention::RawRetention;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_postgres::{PostgresConfig, PostgresRollupStore};
use indicatif::{ProgressBar, ProgressStyle};

use crate::hour_range::HourRangeArgs;

/// Flags of `hourglass reprocess`.
#[derive(clap::Args)]
pub struct ReprocessArgs {
    #[command(flatten)]
    range: HourRangeArgs,
    /// Compute and print the differences only; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    aggregator: AggregatorConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs the reprocessing; fails (exit status 1) if it refused hours past their horizon, after
/// reprocessing the others.
pub async fn run(mut args: ReprocessArgs) -> anyhow::Result<()> {
    let (from_unix, to_unix) = args.range.bounds()?;
    args.aggregator.raw_retention = RawRetention::from_days(i64::from(args.cql.ttl_days));
    let pool = args.postgres.open().await?;
    let raw_store = CqlRawStore::connect(&args.cql).await.context("failed to open the CQL raw store")?;
    let rollups = PostgresRollupStore::new(pool);
    let progress = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template("reprocessing {bar:40} {pos}/{len} hours  eta {eta}")?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let reprocessed = hourglass_aggregator::reprocess::reprocess(
        &args.aggregator,
        &raw_store,
        &rollups,
        args.range.customer(),
        from_unix,
        to_unix,
        args.dry_run,
        now,
        |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        },
    )
    .await?;
    progress.finish_and_clear();
    let diffs = &reprocessed.diffs;
    println!("{:<24} {:<21} {:<24} {:>12} {:>12}", "CUSTOMER", "HOUR", "EVENT TYPE", "EVENTS", "USERS");
    for hour_diff in diffs.iter().filter(|hour_diff| hour_diff.changed()) {
        let hour = DateTime::from_timestamp(hour_diff.customer_hour.hour_start, 0).unwrap_or_default();
        for (event_type, events_before, events_after, users_before, users_after) in &hour_diff.event_types {
            if events_before == events_after && users_before == users_after {
                continue;
            }
            println!(
                "{:<24} {:<21} {:<24} {:>12} {:>12}",
                hour_diff.customer_hour.customer_id.as_str(),
                hour.format("%Y-%m-%dT%H:%M:%SZ"),
                event_type,
                format!("{events_before}->{events_after}"),
                format!("{users_before}->{users_after}")
            );
        }
    }
    let changed = diffs.iter().filter(|hour_diff| hour_diff.changed()).count();
    if args.dry_run {
        println!("dry run: {} hour(s) recomputed, {changed} would change; nothing was written", diffs.len());
    } else {
        println!("{} hour(s) reprocessed and swapped in, {changed} changed", diffs.len());
    }
    if !reprocessed.refused.is_empty() {
        let hours: Vec<String> = reprocessed
            .refused
            .iter()
            .map(|customer_hour| {
                let hour = DateTime::from_timestamp(customer_hour.hour_start, 0).unwrap_or_default();
                format!("  {} {}", customer_hour.customer_id.as_str(), hour.format("%Y-%m-%dT%H:%M:%SZ"))
            })
            .collect();
        bail!(
            "refused {} hour(s), left as they were: for each, {}:\n{}",
            hours.len(),
            args.aggregator.raw_retention.past_horizon_reason(),
            hours.join("\n")
        );
    }
    Ok(())
}
