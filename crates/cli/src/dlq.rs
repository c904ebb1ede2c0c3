//! `hourglass dlq`: lists the dead-letter topic and re-injects records from it.

use std::time::Duration;

use anyhow::{Context, bail};
use hourglass_core::event_log::Topic;
use hourglass_ingestor::dead_letter::{self, DeadLetter};
use hourglass_kafka::{KafkaConfig, KafkaEventLog, reader};

/// Flags of `hourglass dlq`.
#[derive(clap::Args)]
pub struct DlqArgs {
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(clap::Subcommand)]
enum DlqAction {
    /// List dead-lettered records with their reason and origin.
    List,
    /// Append dead-lettered records back to the events topic (safe to repeat: the ingestor is
    /// idempotent by event id and batch id).
    Reinject {
        /// Every record in the dead-letter topic.
        #[arg(long, conflicts_with = "record")]
        all: bool,
        /// One record, as PARTITION:OFFSET of the dead-letter topic (from `dlq list`); repeatable.
        #[arg(long, value_parser = parse_position)]
        record: Vec<(i32, i64)>,
        /// Replace the records' schema-version header (when the producer mislabelled them).
        #[arg(long)]
        set_schema_version: Option<u32>,
    },
}

/// Parses `PARTITION:OFFSET`.
pub(crate) fn parse_position(value: &str) -> Result<(i32, i64), String> {
    let (partition, offset) = value.split_once(':').ok_or("expected PARTITION:OFFSET")?;
    Ok((partition.parse().map_err(|_| "bad partition")?, offset.parse().map_err(|_| "bad offset")?))
}

/// Runs the action.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.clone();
    let records = tokio::task::spawn_blocking(move || {
        reader::read_to_end(&kafka, kafka.topic_name(Topic::DeadLetter), Duration::from_secs(120))
    })
    .await?
    .context("failed to read the dead-letter topic")?;
    let dead_letters: Vec<DeadLetter> = records.into_iter().map(DeadLetter::from_record).collect();
    match args.action {
        DlqAction::List => print_list(&dead_letters),
        DlqAction::Reinject { all, record, set_schema_version } => {
            let selected: Vec<DeadLetter> = if all {
                dead_letters
            } else {
                if record.is_empty() {
                    bail!("say which records: --all or --record PARTITION:OFFSET");
                }
                let mut selected = Vec::new();
                for (partition, offset) in &record {
                    let found = dead_letters
                        .iter()
                        .find(|dead_letter| dead_letter.partition == *partition && dead_letter.offset == *offset)
                        .with_context(|| format!("no dead-letter record at {partition}:{offset}"))?;
                    selected.push(found.clone());
                }
                selected
            };
            let mut producer_config = args.kafka.clone();
            producer_config.create_topics = false;
            let event_log = KafkaEventLog::connect(producer_config, "hourglass-dlq-reinject").await?;
            let topic = args.kafka.topic_name(Topic::DeadLetter);
            let count = dead_letter::reinject(&event_log, topic, &selected, set_schema_version).await?;
            println!("re-injected {count} record(s) into {}", args.kafka.topic_name(Topic::Events));
        }
    }
    Ok(())
}

fn print_list(dead_letters: &[DeadLetter]) {
    println!("{:<18} {:<20} {:<24} {:>8}  REASON", "PARTITION:OFFSET", "KEY", "DEAD-LETTERED AT", "BYTES");
    for dead_letter in dead_letters {
        let at = dead_letter
            .dead_lettered_at_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<18} {:<20} {:<24} {:>8}  {} (from {})",
            format!("{}:{}", dead_letter.partition, dead_letter.offset),
            dead_letter.key,
            at,
            dead_letter.payload.len(),
            dead_letter.reason,
            dead_letter.source
        );
    }
    println!("{} record(s)", dead_letters.len());
}
