//! `hourglass verify`: recount the raw store for a range of aggregated hours and print the ledger.

use anyhow::{Context, bail};
use chrono::DateTime;
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
    let pool = args.postgres.open().await?;
    let raw_store = CqlRawStore::connect(&args.cql).await.context("failed to open the CQL raw store")?;
    let rollups = PostgresRollupStore::new(pool);
    let progress = ProgressBar::new(0)
        .with_style(ProgressStyle::with_template("verifying {bar:40} {pos}/{len} hours  eta {eta}")?);
    let rows = hourglass_aggregator::verify::verify(
        &raw_store,
        &rollups,
        args.range.customer(),
        from_unix,
        to_unix,
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
    let mut unbalanced = 0;
    for row in &rows {
        let hour = DateTime::from_timestamp(row.customer_hour.hour_start, 0).unwrap_or_default();
        let status = match (row.balances(), row.is_final) {
            (true, _) => "ok",
            (false, true) => "MISMATCH",
            (false, false) => "mismatch (provisional)",
        };
        if !row.balances() && row.is_final {
            unbalanced += 1;
        }
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
    println!("{} hour(s) verified, {unbalanced} final hour(s) do not balance", rows.len());
    if unbalanced > 0 {
        bail!(
            "{unbalanced} final hour(s) have stored != counted: re-aggregate them (reprocess) or restore the raw data"
        );
    }
    Ok(())
}
