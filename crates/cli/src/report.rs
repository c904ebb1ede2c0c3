//! `hourglass report`: prints a metrics report from any query service (distributed or standalone), for
//! people without grpcurl. One row per period (and per event type with `--by-event-type`).

use anyhow::{Context, bail};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use hourglass_proto::v1::{GetHourlyMetricsRequest, GetPeriodMetricsRequest, Granularity, MetricsRow, TimeRange};

/// A report's period.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
}

/// Flags of `hourglass report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The query service's (or standalone's) gRPC address.
    #[arg(long, env = "HOURGLASS_TARGET", default_value = "http://127.0.0.1:50051", hide_env_values = true)]
    target: String,
    /// A query API key (`hgk_…`, scope query).
    #[arg(long, env = "HOURGLASS_QUERY_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Report the hours from this many hours before the current one, through the current one.
    #[arg(long, default_value_t = 24, conflicts_with = "from")]
    last_hours: u32,
    /// Start of the range (RFC 3339, on a whole hour), instead of --last-hours.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// End of the range, exclusive.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Length of a row's period.
    #[arg(long, value_enum, default_value_t = Period::Hour)]
    period: Period,
    /// One row per event type and period (otherwise one per period, summing the types).
    #[arg(long)]
    by_event_type: bool,
    /// Only these event types (repeat the flag for several).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
}

fn whole_hour(text: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?
        .timestamp())
}

fn rfc3339(time: Option<&Timestamp>) -> String {
    time.and_then(|time| chrono::DateTime::from_timestamp(time.seconds, 0))
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Asks for the report and prints it.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let (from, to) = match (&args.from, &args.to) {
        (Some(from), Some(to)) => (whole_hour(from)?, whole_hour(to)?),
        _ => {
            let current = hourglass_core::hour::hour_start(chrono::Utc::now().timestamp());
            (current - i64::from(args.last_hours) * 3600, current + 3600)
        }
    };
    let range = Some(TimeRange {
        start: Some(Timestamp { seconds: from, nanos: 0 }),
        end: Some(Timestamp { seconds: to, nanos: 0 }),
    });
    let mut client = QueryServiceClient::connect(args.target.clone())
        .await
        .with_context(|| format!("cannot connect to {}", args.target))?
        .max_decoding_message_size(64 << 20);
    let authorize = |request: &mut tonic::metadata::MetadataMap| -> anyhow::Result<()> {
        request
            .insert("authorization", format!("Bearer {}", args.api_key).parse().context("the API key is not ASCII")?);
        Ok(())
    };
    let rows: Vec<(MetricsRow, bool)> = match args.period {
        Period::Hour => {
            let mut request = tonic::Request::new(GetHourlyMetricsRequest {
                range,
                event_types: args.event_types.clone(),
                group_by_event_type: args.by_event_type,
            });
            authorize(request.metadata_mut())?;
            let response = client
                .get_hourly_metrics(request)
                .await
                .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?;
            response.into_inner().rows.into_iter().map(|row| (row, true)).collect()
        }
        period => {
            let granularity = match period {
                Period::Day => Granularity::Day,
                Period::Week => Granularity::Week,
                _ => Granularity::Month,
            };
            let mut request = tonic::Request::new(GetPeriodMetricsRequest {
                range,
                granularity: granularity.into(),
                event_types: args.event_types.clone(),
                group_by_event_type: args.by_event_type,
            });
            authorize(request.metadata_mut())?;
            let response = client
                .get_period_metrics(request)
                .await
                .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?;
            response
                .into_inner()
                .rows
                .into_iter()
                .filter_map(|row| row.metrics.map(|metrics| (metrics, row.complete)))
                .collect()
        }
    };
    if rows.is_empty() {
        println!(
            "no events in [{}, {})",
            rfc3339(Some(&Timestamp { seconds: from, nanos: 0 })),
            rfc3339(Some(&Timestamp { seconds: to, nanos: 0 }))
        );
        return Ok(());
    }
    println!("{:<22} {:<24} {:>12} {:>14}", "period", "event type", "events", "distinct users");
    for (row, complete) in &rows {
        let users = if row.distinct_users_estimated {
            format!("~{}", row.distinct_users)
        } else {
            row.distinct_users.to_string()
        };
        let period = format!("{}{}", rfc3339(row.period_start.as_ref()), if *complete { "" } else { "*" });
        let event_type = if row.event_type.is_empty() { "(all)" } else { row.event_type.as_str() };
        println!("{period:<22} {event_type:<24} {:>12} {users:>14}", row.events);
    }
    let total: u64 = rows.iter().map(|(row, _)| row.events).sum();
    println!("total events: {total}   (~ estimated from merged sketches; * period only partly in the range)");
    if total == 0 {
        bail!("the report is empty");
    }
    Ok(())
}
