//! `hourglass keys`: API keys and customer limits.
//!
//! Every subcommand writes for people by default (aligned fields, units, "default" for a limit left to
//! the collector) and, with `--output json`, one JSON document for scripts. In text, `keys create` prints
//! the bare key alone on stdout, so `hourglass keys create … > key-file` keeps working; its note goes to
//! stderr.

use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hourglass_core::api_key::{KeyId, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyListing, KeyStore};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_postgres::{PostgresConfig, PostgresKeyStore};
use serde_json::json;

/// How `hourglass keys` prints what it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Flags of `hourglass keys`.
#[derive(clap::Args)]
pub struct KeysArgs {
    /// Manage the keys of `hourglass standalone`'s data directory instead of Postgres's.
    #[arg(long = "data-dir", env = "HOURGLASS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// `text` (for people) or `json` (for scripts). Default text.
    #[arg(long = "output", value_enum, default_value_t = OutputFormat::Text, global = true)]
    output: OutputFormat,
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
        /// What the key may do: `ingest` (send events), `query` (read metrics) or `admin` (request erasures).
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
        /// Distinct event types the customer may send per hour; events of further types are rejected
        /// (TOO_MANY_EVENT_TYPES). Unset: the collector's --default-max-event-types-per-hour (1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_event_types_per_hour: Option<u32>,
        /// Distinct property names one event type may carry per hour; events adding more are rejected
        /// (TOO_MANY_PROPERTY_NAMES). Unset: the collector's --default-max-property-names-per-event-type
        /// (200).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_property_names_per_event_type: Option<u32>,
    },
}

/// Runs the action on the embedded store of `--data-dir`, else on Postgres.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match &args.data_dir {
        Some(data_dir) => {
            let store = SqliteMetaStore::open(data_dir)
                .await
                .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
            run_on(&store, args.action, args.output).await
        }
        None => run_on(&PostgresKeyStore::new(args.postgres.open().await?), args.action, args.output).await,
    }
}

async fn run_on(store: &impl KeyStore, action: KeysAction, output: OutputFormat) -> anyhow::Result<()> {
    match action {
        KeysAction::Create { customer, scope, name } => {
            let key = store.create_key(&customer, scope, &name).await?;
            eprintln!("created key {} ({scope}) for customer {customer}; it is shown once, store it now", key.id());
            match output {
                OutputFormat::Text => println!("{}", key.expose_secret()),
                OutputFormat::Json => print_json(&json!({
                    "key": key.expose_secret(),
                    "key_id": key.id().to_string(),
                    "customer": customer.as_str(),
                    "scope": scope.to_string(),
                    "name": name,
                }))?,
            }
        }
        KeysAction::Revoke { key_id } => {
            let key_id = KeyId::parse(&key_id).with_context(|| format!("{key_id:?} is not a key id"))?;
            if !store.revoke_key(&key_id).await? {
                bail!("no key with id {key_id}");
            }
            match output {
                OutputFormat::Text => {
                    println!("revoked {key_id}; collectors stop accepting it within their key-cache TTL")
                }
                OutputFormat::Json => print_json(&json!({ "key_id": key_id.to_string(), "revoked": true }))?,
            }
        }
        KeysAction::List { customer } => {
            let keys = store.list_keys(customer.as_ref()).await?;
            match output {
                OutputFormat::Text => print!("{}", key_table(&keys)),
                OutputFormat::Json => print_json(&keys.iter().map(key_json).collect())?,
            }
        }
        KeysAction::Limits {
            customer,
            events_per_second,
            burst_events,
            kafka_key_spread,
            max_event_types_per_hour,
            max_property_names_per_event_type,
        } => {
            if kafka_key_spread.is_some_and(|spread| !(1..=1024).contains(&spread)) {
                bail!("--kafka-key-spread must be between 1 and 1024");
            }
            let limits = CustomerLimits {
                events_per_second,
                burst_events,
                kafka_key_spread,
                max_event_types_per_hour,
                max_property_names_per_event_type,
            };
            store.set_customer_limits(&customer, limits).await?;
            match output {
                OutputFormat::Text => print!("{}", limits_text(&customer, &limits)),
                // null: the collector's default applies.
                OutputFormat::Json => print_json(&json!({
                    "customer": customer.as_str(),
                    "events_per_second": limits.events_per_second,
                    "burst_events": limits.burst_events,
                    "kafka_key_spread": limits.kafka_key_spread,
                    "max_event_types_per_hour": limits.max_event_types_per_hour,
                    "max_property_names_per_event_type": limits.max_property_names_per_event_type,
                }))?,
            }
        }
    }
    Ok(())
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A time as people read it, to the second.
fn human_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `1234567` as `1,234,567`.
fn thousands(number: u32) -> String {
    let digits = number.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// The keys as a table whose columns are as wide as their widest cell, or a line saying there are none.
fn key_table(keys: &[KeyListing]) -> String {
    if keys.is_empty() {
        return "no keys\n".to_owned();
    }
    let header = ["KEY ID", "CUSTOMER", "SCOPE", "CREATED", "REVOKED", "NAME"].map(str::to_owned);
    let rows: Vec<[String; 6]> = keys
        .iter()
        .map(|key| {
            [
                key.key_id.to_string(),
                key.customer_id.to_string(),
                key.scope.to_string(),
                human_time(key.created_at),
                key.revoked_at.map(human_time).unwrap_or_else(|| "-".to_owned()),
                if key.name.is_empty() { "-".to_owned() } else { key.name.clone() },
            ]
        })
        .collect();
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

fn key_json(key: &KeyListing) -> serde_json::Value {
    json!({
        "key_id": key.key_id.to_string(),
        "customer": key.customer_id.as_str(),
        "scope": key.scope.to_string(),
        "name": key.name,
        "created_at": key.created_at.to_rfc3339(),
        "revoked_at": key.revoked_at.map(|time| time.to_rfc3339()),
    })
}

/// The customer's limits, one per line, with units; an unset one names the collector flag that applies.
fn limits_text(customer: &CustomerId, limits: &CustomerLimits) -> String {
    let or_default = |value: Option<u32>, unit: &str, default: &str| match value {
        Some(value) => format!("{} {unit}", thousands(value)),
        None => format!("default ({default})"),
    };
    format!(
        "limits of customer {customer}:\n  \
         events per second  {}\n  \
         burst              {}\n  \
         kafka key spread   {}\n  \
         event types        {}\n  \
         property names     {}\n",
        or_default(
            limits.events_per_second,
            "events/s per collector replica",
            "the collector's --quota-events-per-second"
        ),
        or_default(limits.burst_events, "events", "the collector's --quota-burst-events"),
        or_default(limits.kafka_key_spread, "keys", "1 key: the customer's batches stay in order"),
        or_default(
            limits.max_event_types_per_hour,
            "distinct per hour",
            "the collector's --default-max-event-types-per-hour"
        ),
        or_default(
            limits.max_property_names_per_event_type,
            "distinct per event type per hour",
            "the collector's --default-max-property-names-per-event-type"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(u32::MAX), "4,294,967,295");
    }
}
