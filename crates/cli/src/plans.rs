//! `hourglass plans`: customers' tracking plans (README: Tracking plans).
//!
//! `push` stores a JSON plan file as the customer's next version (only when it differs from the current
//! one) and lists what changed; `show` prints a version as JSON that `push` takes back; `diff` lists the
//! changes from the current version (or `--from N`) to a file (or to `--to M`); `history` lists the
//! versions. Collectors apply a new version within their plan-cache TTL (`--plan-cache-ttl-secs`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::PlanDocument;
use hourglass_core::tracking_plan::diff::diff;
use hourglass_core::tracking_plan::store::{PlanStore, PushOutcome, StoredPlan};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_postgres::{PostgresConfig, PostgresPlanStore};

/// Flags of `hourglass plans`.
#[derive(clap::Args)]
pub struct PlansArgs {
    /// Manage the plans of `hourglass standalone`'s data directory instead of Postgres's.
    #[arg(long = "data-dir", env = "HOURGLASS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    postgres: PostgresConfig,
    #[command(subcommand)]
    action: PlansAction,
}

#[derive(clap::Subcommand)]
enum PlansAction {
    /// Store a plan file (JSON, docs/tracking-plan.schema.json) as the customer's next version; a file
    /// equal to the current version (however formatted) stores nothing.
    Push {
        /// The customer (created if new).
        #[arg(long)]
        customer: CustomerId,
        /// The plan file.
        file: PathBuf,
    },
    /// Print a version of the customer's plan (the current one by default) as JSON.
    #[command(disable_version_flag = true)]
    Show {
        /// The customer.
        #[arg(long)]
        customer: CustomerId,
        /// The version to print.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List the changes from the current version (or `--from`) to FILE (or to `--to`).
    Diff {
        /// The customer.
        #[arg(long)]
        customer: CustomerId,
        /// The version to compare from; the current one by default.
        #[arg(long)]
        from: Option<u32>,
        /// The version to compare to, instead of a file.
        #[arg(long, conflicts_with = "file")]
        to: Option<u32>,
        /// The plan file to compare to.
        #[arg(required_unless_present = "to")]
        file: Option<PathBuf>,
    },
    /// List the customer's plan versions, oldest first.
    History {
        /// The customer.
        #[arg(long)]
        customer: CustomerId,
    },
}

/// Runs the action on the embedded store of `--data-dir`, else on Postgres.
pub async fn run(args: PlansArgs) -> anyhow::Result<()> {
    match &args.data_dir {
        Some(data_dir) => {
            let store = SqliteMetaStore::open(data_dir)
                .await
                .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
            run_on(&store, args.action).await
        }
        None => run_on(&PostgresPlanStore::new(args.postgres.open().await?), args.action).await,
    }
}

fn read_plan(file: &PathBuf) -> anyhow::Result<PlanDocument> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    PlanDocument::parse(&text).with_context(|| format!("{} is refused", file.display()))
}

async fn version_of(store: &impl PlanStore, customer: &CustomerId, version: Option<u32>) -> anyhow::Result<StoredPlan> {
    match store.plan(customer, version).await? {
        Some(stored) => Ok(stored),
        None => match version {
            Some(version) => bail!("customer {customer} has no plan version {version}"),
            None => bail!("customer {customer} has no plan"),
        },
    }
}

async fn run_on(store: &impl PlanStore, action: PlansAction) -> anyhow::Result<()> {
    match action {
        PlansAction::Push { customer, file } => {
            let document = read_plan(&file)?;
            let previous = store.plan(&customer, None).await?;
            match store.push_plan(&customer, &document).await? {
                PushOutcome::Unchanged(version) => {
                    println!("unchanged: {} is plan v{version} of {customer}", file.display())
                }
                PushOutcome::Created(version) => {
                    println!(
                        "pushed plan v{version} of {customer} (mode {}); collectors apply it within their plan-cache TTL",
                        document.mode.as_str()
                    );
                    if let Some(previous) = previous {
                        print_changes(
                            &format!("v{} -> v{version}", previous.version),
                            &diff(&previous.document, &document),
                        );
                    }
                }
            }
        }
        PlansAction::Show { customer, version } => {
            let stored = version_of(store, &customer, version).await?;
            eprintln!(
                "plan v{} of {customer}, pushed {}",
                stored.version,
                stored.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
            println!("{}", stored.document.pretty_json());
        }
        PlansAction::Diff { customer, from, to, file } => {
            let old = version_of(store, &customer, from).await?;
            let (label, new) = match (to, file) {
                (Some(to), _) => (format!("v{to}"), version_of(store, &customer, Some(to)).await?.document),
                (None, Some(file)) => (file.display().to_string(), read_plan(&file)?),
                (None, None) => unreachable!("clap requires a file or --to"),
            };
            print_changes(&format!("v{} -> {label}", old.version), &diff(&old.document, &new));
        }
        PlansAction::History { customer } => {
            let history = store.plan_history(&customer).await?;
            if history.is_empty() {
                println!("customer {customer} has no plan");
            }
            let mut previous: Option<&StoredPlan> = None;
            for stored in &history {
                let changes = previous.map_or(0, |previous| diff(&previous.document, &stored.document).len());
                println!(
                    "v{:<4} {}  mode {:<7}  {:>3} event types  {}",
                    stored.version,
                    stored.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    stored.document.mode.as_str(),
                    stored.document.event_types.len(),
                    match previous {
                        None => "first version".to_owned(),
                        Some(_) if changes == 1 => "1 change".to_owned(),
                        Some(_) => format!("{changes} changes"),
                    }
                );
                previous = Some(stored);
            }
        }
    }
    Ok(())
}

fn print_changes(label: &str, changes: &[String]) {
    if changes.is_empty() {
        println!("{label}: no changes");
        return;
    }
    println!("{label}:");
    for line in changes {
        println!("  {line}");
    }
}
