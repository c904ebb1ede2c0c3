//! `hourglass keys`: API keys and customer limits.

use std::path::PathBuf;

use anyhow::{Context, bail};
use hourglass_core::api_key::{KeyId, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyStore};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_postgres::{PostgresConfig, PostgresKeyStore};

/// Flags of `hourglass keys`.
#[derive(clap::Args)]
pub struct KeysArgs {
    /// Manage the keys of `hourglass standalone`'s data directory instead of Postgres's.
    #[arg(long = "data-dir", env = "HOURGLASS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    postgres: PostgresConfig,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(clap::Subcommand)]
enum KeysAction {
    /// Create a key and print it. It is shown once: only its hash is stored.
    Create {
        /// The customer the key belongs to (created if new): 1-64 of a-z, 0-9, '-', '_'.
        #[arg(long)]
        customer: CustomerId,
        /// What the key may do: `ingest` (send events) or `query` (read metrics).
        #[arg(long, default_value = "ingest")]
        scope: Scope,
        /// A label to recognise the key by in listings.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Revoke a key by its id (`hgk_` + 8 characters, as `keys list` shows). Collectors stop accepting
    /// it within their key-cache TTL.
    Revoke {
        /// The key id.
        key_id: String,
    },
    /// List keys (never their secrets).
    List {
        /// Only this customer's keys.
        #[arg(long)]
        customer: Option<CustomerId>,
    },
    /// Set a customer's limits; an omitted limit falls back to the collector's default.
    Limits {
        /// The customer.
        #[arg(long)]
        customer: CustomerId,
        /// Sustained events per second, per collector replica.
        #[arg(long)]
        events_per_second: Option<u32>,
        /// Burst size in events.
        #[arg(long)]
        burst_events: Option<u32>,
        /// Spread the customer's batches over this many Kafka keys (hot customers); 1 keeps order.
        #[arg(long)]
        kafka_key_spread: Option<u32>,
    },
}

/// Runs the action on the embedded store of `--data-dir`, else on Postgres.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match &args.data_dir {
        Some(data_dir) => {
            let store = SqliteMetaStore::open(data_dir)
                .await
                .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
            run_on(&store, args.action).await
        }
        None => run_on(&PostgresKeyStore::new(args.postgres.open().await?), args.action).await,
    }
}

async fn run_on(store: &impl KeyStore, action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Create { customer, scope, name } => {
            let key = store.create_key(&customer, scope, &name).await?;
            eprintln!("created key {} ({scope}) for customer {customer}; it is shown once, store it now:", key.id());
            println!("{}", key.expose_secret());
        }
        KeysAction::Revoke { key_id } => {
            let key_id = KeyId::parse(&key_id).with_context(|| format!("{key_id:?} is not a key id"))?;
            if !store.revoke_key(&key_id).await? {
                bail!("no key with id {key_id}");
            }
            println!("revoked {key_id}");
        }
        KeysAction::List { customer } => {
            println!("{:<14} {:<24} {:<7} {:<26} {:<26} NAME", "KEY ID", "CUSTOMER", "SCOPE", "CREATED", "REVOKED");
            for key in store.list_keys(customer.as_ref()).await? {
                let revoked = key.revoked_at.map(|time| time.to_rfc3339()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<14} {:<24} {:<7} {:<26} {:<26} {}",
                    key.key_id,
                    key.customer_id,
                    key.scope,
                    key.created_at.to_rfc3339(),
                    revoked,
                    key.name
                );
            }
        }
        KeysAction::Limits { customer, events_per_second, burst_events, kafka_key_spread } => {
            if kafka_key_spread.is_some_and(|spread| !(1..=1024).contains(&spread)) {
                bail!("--kafka-key-spread must be between 1 and 1024");
            }
            let limits = CustomerLimits { events_per_second, burst_events, kafka_key_spread };
            store.set_customer_limits(&customer, limits).await?;
            println!("limits of {customer}: {limits:?}");
        }
    }
    Ok(())
}
