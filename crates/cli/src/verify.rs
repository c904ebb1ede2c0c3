//! `hourglass verify`: recount the raw store for a range of aggregated hours and print the ledger.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chrono::DateTime;
use hourglass_core::retention::RawRetention;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_postgres::{PostgresConfig, PostgresRollupStore};
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
