//! `hourglass erase`: erase one person's events everywhere (GDPR Art. 17, CCPA) and recompute the hours
//! they touched (`hourglass_aggregator::erasure`), on CQL and Postgres or on a standalone data directory.
//!
//! `--dry-run` scans and prints the hours and event counts an erasure would touch, and records and
//! changes nothing. Otherwise the request is recorded (with a salted hash of the user id, never the id),
//! run to its end with progress on stderr, and its hours printed with their new revisions. A run that
//! dies leaves the request to `hourglass erase --resume`, which needs no user id.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hourglass_aggregator::AggregatorConfig;
use hourglass_aggregator::erasure::{self, Erased, ErasureConfig, ErasureProgress, ErasureSettings};
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureHour, ErasureSalt, ErasureStore, UserHash, UserMatcher};
use hourglass_core::raw_store::RawStore;
use hourglass_core::retention::RawRetention;
use hourglass_core::rollup_store::RollupStore;
use hourglass_cql::{CqlConfig, CqlRawStore};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_postgres::{PostgresConfig, PostgresErasureStore, PostgresRollupStore};
use indicatif::{ProgressBar, ProgressStyle};

/// How long `erase` waits for another run's lease on the same request to expire.
const LEASE_WAIT: Duration = Duration::from_secs(10);

/// Flags of `hourglass erase`.
#[derive(clap::Args)]
pub struct EraseArgs {
    /// The customer whose user is erased.
    #[arg(long, required_unless_present = "resume")]
    customer: Option<CustomerId>,
    /// The user id whose events are erased. Never stored nor logged: the request keeps a salted hash.
    #[arg(long, required_unless_present = "resume")]
    user_id: Option<String>,
    /// Print the hours and event counts the erasure would touch; record and change nothing.
    #[arg(long, conflicts_with = "resume")]
    dry_run: bool,
    /// Run every request that is not done yet (one a crashed run left), instead of a new one.
    #[arg(long, conflicts_with_all = ["customer", "user_id"])]
    resume: bool,
    /// Erase in `hourglass standalone`'s data directory instead of CQL and Postgres.
    #[arg(long = "data-dir", env = "HOURGLASS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// With `--data-dir`: standalone's raw retention, which decides the hours still recomputed.
    #[arg(long = "raw-retention-days", env = "HOURGLASS_RAW_RETENTION_DAYS", default_value_t = 30)]
    standalone_raw_retention_days: i64,
    /// With `--data-dir`: standalone's bucket count (a data directory keeps the count it was created with).
    #[arg(long = "buckets", env = "HOURGLASS_STANDALONE_BUCKETS", default_value_t = 4)]
    standalone_buckets: u32,
    #[command(flatten)]
    erasure: ErasureConfig,
    #[command(flatten)]
    aggregator: AggregatorConfig,
    #[command(flatten)]
    cql: CqlConfig,
    #[command(flatten)]
    postgres: PostgresConfig,
}

/// Runs the erasure on the data directory's stores, else on CQL and Postgres.
pub async fn run(mut args: EraseArgs) -> anyhow::Result<()> {
    let salt = args.erasure.erasure_salt()?;
    match args.data_dir.clone() {
        Some(data_dir) => {
            args.aggregator.raw_retention = RawRetention::from_days(args.standalone_raw_retention_days);
            let opened = format!("cannot open the data directory {}", data_dir.display());
            let raw_store = SqliteRawStore::open(&data_dir, args.standalone_buckets).await.context(opened.clone())?;
            let meta = SqliteMetaStore::open(&data_dir).await.context(opened)?;
            erase_on(&args, &salt, &raw_store, &meta, &meta).await
        }
        None => {
            args.aggregator.raw_retention = RawRetention::from_days(i64::from(args.cql.ttl_days));
            let pool = args.postgres.open().await?;
            let raw_store = CqlRawStore::connect(&args.cql).await.context("failed to open the CQL raw store")?;
            let rollups = PostgresRollupStore::new(pool.clone());
            erase_on(&args, &salt, &raw_store, &rollups, &PostgresErasureStore::new(pool)).await
        }
    }
}

fn now_unix() -> anyhow::Result<i64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64)
}

async fn erase_on<R: RawStore, S: RollupStore, E: ErasureStore>(
    args: &EraseArgs,
    salt: &ErasureSalt,
    raw_store: &R,
    rollups: &S,
    erasures: &E,
) -> anyhow::Result<()> {
    let config = &args.aggregator;
    let (Some(customer), Some(user_id)) = (&args.customer, &args.user_id) else {
        return resume_all(config, salt, raw_store, rollups, erasures).await;
    };
    if args.dry_run {
        let matcher = UserMatcher::new(salt, customer.clone(), UserHash::of(salt, customer.as_str(), user_id));
        let progress = progress_bar();
        let found = erasure::find_hours(config, raw_store, rollups, &matcher, now_unix()?, |step| {
            show(&progress, step);
        })
        .await?;
        progress.finish_and_clear();
        print_hours(&found.hours, false);
        let events: u64 = found.hours.iter().map(|hour| hour.events).sum();
        println!(
            "dry run: {events} event(s) of the user in {} hour(s) would be erased and those hours recomputed; \
             nothing was recorded or changed",
            found.hours.len()
        );
        print_past_horizon(&found.past_horizon);
        return Ok(());
    }
    let request = erasure::request(&args.erasure, erasures, customer, user_id, Utc::now()).await?;
    println!(
        "erasure request {} for a user of {customer}: their events are dropped at ingestion until {}",
        request.id,
        request.suppress_until.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let Some(lease) = erasure::lease_request(config, erasures, &request.id, LEASE_WAIT).await? else {
        bail!(
            "erasure request {} is being run by another process (or is done); if that process died, \
             `hourglass erase --resume` takes it over once its lease expires",
            request.id
        );
    };
    let progress = progress_bar();
    let erased = erasure::run_request(config, salt, raw_store, rollups, erasures, &lease, now_unix()?, |step| {
        show(&progress, step)
    })
    .await?;
    progress.finish_and_clear();
    print_erased(&erased);
    Ok(())
}

async fn resume_all<R: RawStore, S: RollupStore, E: ErasureStore>(
    config: &AggregatorConfig,
    salt: &ErasureSalt,
    raw_store: &R,
    rollups: &S,
    erasures: &E,
) -> anyhow::Result<()> {
    let mut resumed = 0;
    while let Some(lease) = erasure::lease_next(config, erasures).await? {
        println!("resuming erasure request {} ({})", lease.request.id, lease.request.state);
        let progress = progress_bar();
        let erased = erasure::run_request(config, salt, raw_store, rollups, erasures, &lease, now_unix()?, |step| {
            show(&progress, step)
        })
        .await?;
        progress.finish_and_clear();
        print_erased(&erased);
        resumed += 1;
    }
    println!("{resumed} erasure request(s) resumed and done; none is left to run (or another run holds it)");
    Ok(())
}

fn progress_bar() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:9} {bar:40} {pos}/{len} hours  eta {eta}").expect("a valid template"),
    )
}

fn show(progress: &ProgressBar, step: ErasureProgress) {
    let (message, done, total) = match step {
        ErasureProgress::Scanning { done, total } => ("scanning", done, total),
        ErasureProgress::Erasing { done, total } => ("erasing", done, total),
    };
    progress.set_message(message);
    progress.set_length(total as u64);
    progress.set_position(done as u64);
}

fn hour_text(hour_start: i64) -> String {
    DateTime::from_timestamp(hour_start, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn print_hours(hours: &[ErasureHour], with_revision: bool) {
    if with_revision {
        println!("{:<24} {:<21} {:>10} {:>9}", "CUSTOMER", "HOUR", "EVENTS", "REVISION");
    } else {
        println!("{:<24} {:<21} {:>10}", "CUSTOMER", "HOUR", "EVENTS");
    }
    for hour in hours {
        let customer = hour.customer_hour.customer_id.as_str();
        let hour_start = hour_text(hour.customer_hour.hour_start);
        match (with_revision, hour.revision) {
            (true, Some(0)) => println!("{customer:<24} {hour_start:<21} {:>10} {:>9}", hour.events, "expired"),
            (true, Some(revision)) => println!("{customer:<24} {hour_start:<21} {:>10} {revision:>9}", hour.events),
            _ => println!("{customer:<24} {hour_start:<21} {:>10}", hour.events),
        }
    }
}

fn print_past_horizon(hours: &[ErasureHour]) {
    if hours.is_empty() {
        return;
    }
    println!(
        "{} hour(s) past their horizon also hold the user's events: their rollups are never recomputed and their \
         raw rows expire within a day:",
        hours.len()
    );
    for hour in hours {
        println!(
            "  {} {} ({} events)",
            hour.customer_hour.customer_id,
            hour_text(hour.customer_hour.hour_start),
            hour.events
        );
    }
}

fn print_erased(erased: &Erased) {
    print_hours(&erased.hours, true);
    let events: u64 = erased.hours.iter().map(|hour| hour.events).sum();
    println!(
        "erasure request {} done: {events} event(s) erased from {} hour(s), each recomputed (REVISION: the \
         hour's rollup now)",
        erased.request.id,
        erased.hours.len()
    );
    print_past_horizon(&erased.past_horizon);
}
