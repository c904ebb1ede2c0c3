//! `hourglass bench query`: a 30-day hourly report of one customer with 20 event types, asked by
//! concurrent clients of a real `hourglass query` process over Postgres. Prints p50/p90/p99 latency at a
//! fixed request rate (latency counted from when each request was due, so a stall is not hidden by the
//! requests it delayed), the most requests/s the service sustains, and its CPU per request.

use std::net::TcpListener as StdTcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::hll::HyperLogLog;
use hourglass_core::hour;
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::HourOutcomes;
use hourglass_core::rollup_store::{EventTypeRollup, HourRollup, NumericRollup, RollupStore};
use hourglass_cql::CqlConfig;
use hourglass_postgres::{PostgresConfig, PostgresJobQueue, PostgresKeyStore, PostgresRollupStore};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::query_service_client::QueryServiceClient;
use hourglass_proto::v1::{GetHourlyMetricsRequest, TimeRange};
use indicatif::ProgressStyle;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::{peak_rss_kib, process_cpu_seconds, self_cpu_seconds, wait_until_serving};

/// Flags of `hourglass bench query`.
#[derive(clap::Args, Clone)]
pub struct QueryBenchArgs {
    /// Days of hourly rollups in the report.
    #[arg(long, default_value_t = 30)]
    pub(super) days: u32,
    /// Event types per hour.
    #[arg(long, default_value_t = 20)]
    pub(super) event_types: u32,
    /// Requests per second in the fixed-rate run.
    #[arg(long, default_value_t = 1000)]
    pub(super) rate: u32,
    /// Seconds of each run.
    #[arg(long, default_value_t = 10)]
    pub(super) seconds: u64,
    /// Concurrent requests in the maximum-throughput run.
    #[arg(long, default_value_t = 16)]
    pub(super) concurrency: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    pub(super) connections: usize,
    /// Sum over event types per hour (one row per hour) instead of one row per hour and type.
    #[arg(long)]
    pub(super) totals: bool,
    /// Run the service without its report cache, so every request reads Postgres.
    #[arg(long)]
    pub(super) no_cache: bool,
    /// The clients accept gzip-compressed responses, as gRPC's C-core clients (Python's grpcio) announce
    /// by default; the service then sends reports compressed.
    #[arg(long)]
    pub(super) gzip: bool,
    /// The clients' HTTP/2 SETTINGS_MAX_FRAME_SIZE, the largest DATA frame the service may send them
    /// (16,384 to 16,777,215; HTTP/2's default and most clients': 16,384).
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(16_384..=16_777_215))]
    pub(super) max_frame_size: u32,
    #[command(flatten)]
    pub(super) postgres: PostgresConfig,
    #[command(flatten)]
    pub(super) cql: CqlConfig,
}

/// CPU seconds of every process named `postgres` on this machine (the server and its backends).
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name.trim() == "postgres"))
        .filter_map(|pid| process_cpu_seconds(pid).ok())
        .sum()
}

/// Writes `days` of final hourly rollups for `customer`, as aggregation jobs would.
async fn seed(
    args: &QueryBenchArgs,
    pool: sqlx::PgPool,
    customer: &CustomerId,
    first_hour: i64,
    bars: super::Bars,
) -> anyhow::Result<()> {
    let job_queue = PostgresJobQueue::new(pool.clone());
    let rollups = PostgresRollupStore::new(pool);
    let hours = i64::from(args.days) * 24;
    let progress = super::progress_bar(hours as u64, bars)
        .with_style(ProgressStyle::with_template("seeding hourly rollups {bar:40} {human_pos}/{human_len}")?);
    for index in 0..hours {
        let hour_start = first_hour + index * 3600;
        let customer_hour = CustomerHour { customer_id: customer.clone(), hour_start };
        job_queue.mark_dirty(std::slice::from_ref(&customer_hour)).await?;
        let lease = rollups
            .lease_hour(&customer_hour, "bench-seed", Duration::from_secs(60))
            .await?
            .context("a fresh hour is free to lease")?;
        let mut event_types = Vec::new();
        let mut numeric = Vec::new();
        let mut events = 0;
        let mut all_users = HyperLogLog::new();
        for type_index in 0..args.event_types {
            let users = 50 + (index as u64 * 7 + u64::from(type_index) * 13) % 400;
            let mut sketch = HyperLogLog::new();
            (0..users).for_each(|user| sketch.insert(format!("user-{type_index}-{user}").as_bytes()));
            all_users.merge(&sketch);
            let type_events = users * 3;
            events += type_events;
            let event_type = format!("event_type_{type_index:02}");
            if type_index % 5 == 0 {
                numeric.push(NumericRollup {
                    event_type: event_type.clone(),
                    property: "price".into(),
                    count: type_events,
                    sum: type_events as f64 * 4.5,
                    min: 0.5,
                    max: 99.0,
                });
            }
            event_types.push(EventTypeRollup {
                event_type,
                events: type_events,
                distinct_users: users,
                users_sketch: sketch.to_bytes(),
            });
        }
        let distinct_users = event_types.iter().map(|row| row.distinct_users).sum();
        let rollup = HourRollup {
            event_types,
            numeric,
            events,
            // Every type's users are its own in this data, so the hour's users are their sum.
            distinct_users,
            users_sketch: all_users.to_bytes(),
            outcomes: HourOutcomes { accepted: events, ..HourOutcomes::default() },
            logic_version: 1,
            is_final: true,
        };
        rollups.complete(&lease, &rollup).await?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(())
}

fn report_request(key: &str, from: i64, to: i64, group_by_event_type: bool) -> tonic::Request<GetHourlyMetricsRequest> {
    let mut request = tonic::Request::new(GetHourlyMetricsRequest {
        range: Some(TimeRange {
            start: Some(Timestamp { seconds: from, nanos: 0 }),
            end: Some(Timestamp { seconds: to, nanos: 0 }),
        }),
        event_types: vec![],
        group_by_event_type,
    });
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ASCII key"));
    request
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&mut self, fraction: f64) -> Duration {
        self.0.sort_unstable();
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.0.len() as f64 * fraction).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[index]
    }

    fn summary(&mut self) -> LatencySummary {
        let mut milliseconds = |fraction| self.percentile(fraction).as_secs_f64() * 1e3;
        LatencySummary {
            p50_ms: milliseconds(0.50),
            p90_ms: milliseconds(0.90),
            p99_ms: milliseconds(0.99),
            max_ms: milliseconds(1.0),
        }
    }
}

/// A latency distribution, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

/// What the query bench measured for one report shape.
#[derive(Clone, Debug)]
pub struct QueryFigures {
    /// Summed over event types (one row per hour) rather than one row per hour and type.
    pub summed: bool,
    /// Rows per response.
    pub rows: usize,
    /// Encoded bytes per response.
    pub response_bytes: usize,
    /// The fixed-rate run: requests per second asked.
    pub rate: u32,
    /// The fixed-rate run's latency, counted from when each request was due.
    pub fixed: LatencySummary,
    /// Requests of the fixed-rate run that failed.
    pub fixed_failures: usize,
    /// Requests per second the fixed-rate run achieved.
    pub fixed_achieved_rate: f64,
    /// The query service's CPU per request in the fixed-rate run, in milliseconds.
    pub fixed_cpu_ms_per_request: f64,
    /// The maximum-throughput run: requests per second.
    pub max_rate: f64,
    /// The maximum-throughput run's latency.
    pub closed: LatencySummary,
    /// CPU per request in the maximum-throughput run, in milliseconds: service, Postgres, client.
    pub closed_cpu_ms_per_request: (f64, f64, f64),
    /// The query service's peak RSS so far, in KiB.
    pub peak_rss_kib: u64,
}

/// Runs the query benchmark and prints what it measured.
pub async fn run(args: QueryBenchArgs) -> anyhow::Result<()> {
    let figures = measure(&args, &[(args.totals, args.rate)], super::Bars::Shown).await?;
    for shape in &figures {
        print(&args, shape);
    }
    Ok(())
}

/// Seeds the rollups, starts a query service of its own and measures each report shape in turn: summed
/// over types or not, at a fixed rate of requests per second.
pub async fn measure(
    args: &QueryBenchArgs,
    shapes: &[(bool, u32)],
    bars: super::Bars,
) -> anyhow::Result<Vec<QueryFigures>> {
    let run_id = super::run_id();
    let pool =
        args.postgres.open().await.context("failed to open postgres (is it running? e2e/servers/postgres.sh start)")?;
    let customer = CustomerId::new(&format!("bench-query-{run_id}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let to = hour::hour_start(now) - 24 * 3600;
    let from = to - i64::from(args.days) * 24 * 3600;
    seed(args, pool.clone(), &customer, from, bars).await?;
    let key = PostgresKeyStore::new(pool).create_key(&customer, Scope::Query, &run_id).await?;
    let key = key.expose_secret().to_owned();

    let port = StdTcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("query")
        .env("HOURGLASS_QUERY_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("HOURGLASS_DATABASE_URL", &args.postgres.url)
        .env("HOURGLASS_CQL_NODES", args.cql.nodes.join(","))
        .env("HOURGLASS_READINESS_INTERVAL_MS", "200")
        .env("HOURGLASS_QUERY_CACHE_ENTRIES", if args.no_cache { "0" } else { "10000" })
        // One replica: any secret will do, and giving one keeps the log free of the warning for none.
        .env("HOURGLASS_PAGE_TOKEN_SECRET", uuid::Uuid::now_v7().to_string())
        .env("HOURGLASS_LOG", "warn")
        // A service logs to stdout, discarded here: its warnings go to the bench's stderr instead.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the query service")?;
    let query_pid = child.id().context("query service exited at once")?;
    let target = format!("http://127.0.0.1:{port}");
    wait_until_serving(&target, Duration::from_secs(60)).await?;
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let endpoint = tonic::transport::Endpoint::from_shared(target.clone())?.max_frame_size(args.max_frame_size);
        channels.push(endpoint.connect().await?);
    }
    let service = Service { channels, query_pid, key, from, to, gzip: args.gzip };
    let mut figures = Vec::new();
    for (summed, rate) in shapes {
        figures.push(measure_shape(args, &service, *summed, *rate).await?);
    }
    super::terminate(&mut child, "query service").await;
    Ok(figures)
}

/// The running query service and what to ask it.
struct Service {
    channels: Vec<Channel>,
    query_pid: u32,
    key: String,
    from: i64,
    to: i64,
    /// Whether the clients accept gzip-compressed responses.
    gzip: bool,
}

impl Service {
    fn client(&self, index: usize) -> QueryServiceClient<Channel> {
        let client = QueryServiceClient::new(self.channels[index % self.channels.len()].clone())
            .max_decoding_message_size(64 << 20);
        match self.gzip {
            true => client.accept_compressed(CompressionEncoding::Gzip),
            false => client,
        }
    }
}

async fn measure_shape(
    args: &QueryBenchArgs,
    service: &Service,
    summed: bool,
    rate: u32,
) -> anyhow::Result<QueryFigures> {
    let (key, from, to, query_pid) = (&service.key, service.from, service.to, service.query_pid);
    let client = |index: usize| service.client(index);
    let group = !summed;
    // One request to check the answer and learn its size, then a short warm-up.
    let response = client(0).get_hourly_metrics(report_request(key, from, to, group)).await?.into_inner();
    let expected_rows =
        if group { args.days as usize * 24 * args.event_types as usize } else { args.days as usize * 24 };
    if response.rows.len() != expected_rows {
        bail!("the report has {} rows, expected {expected_rows}", response.rows.len());
    }
    let response_bytes = prost::Message::encoded_len(&response);
    for _ in 0..50 {
        client(0).get_hourly_metrics(report_request(key, from, to, group)).await?;
    }

    // Fixed rate: a request is due every 1/rate s whether or not earlier ones have finished.
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = u64::from(rate) * args.seconds;
    let cpu_before = process_cpu_seconds(query_pid)?;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for index in 0..total {
        let due = started + interval * index as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut client: QueryServiceClient<Channel> = client(index as usize);
        let request = report_request(key, from, to, group);
        tasks.push(tokio::spawn(async move {
            let result = client.get_hourly_metrics(request).await;
            (result.is_ok(), due.elapsed())
        }));
    }
    let mut fixed = Latencies(Vec::with_capacity(tasks.len()));
    let mut failures = 0;
    for task in tasks {
        let (ok, latency) = task.await?;
        failures += usize::from(!ok);
        fixed.0.push(latency);
    }
    let fixed_wall = started.elapsed().as_secs_f64();
    let fixed_cpu = process_cpu_seconds(query_pid)? - cpu_before;

    // Maximum throughput: `concurrency` requests always outstanding.
    let cpu_before = process_cpu_seconds(query_pid)?;
    let client_cpu_before = self_cpu_seconds();
    let postgres_cpu_before = postgres_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|index| {
            let mut client = client(index);
            let key = key.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if client.get_hourly_metrics(report_request(&key, from, to, group)).await.is_ok() {
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut closed = Latencies(Vec::new());
    for worker in workers {
        closed.0.extend(worker.await?);
    }
    let closed_wall = started.elapsed().as_secs_f64();
    let closed_cpu = process_cpu_seconds(query_pid)? - cpu_before;
    let client_cpu = self_cpu_seconds() - client_cpu_before;
    // Backends that exited meanwhile take their CPU with them: a lower bound.
    let postgres_cpu = postgres_cpu_seconds() - postgres_cpu_before;
    let peak_rss = peak_rss_kib(query_pid)?;
    let completed = closed.0.len() as f64;
    Ok(QueryFigures {
        summed,
        rows: expected_rows,
        response_bytes,
        rate,
        fixed: fixed.summary(),
        fixed_failures: failures,
        fixed_achieved_rate: total as f64 / fixed_wall,
        fixed_cpu_ms_per_request: fixed_cpu / total.max(1) as f64 * 1e3,
        max_rate: completed / closed_wall,
        closed: closed.summary(),
        closed_cpu_ms_per_request: (
            closed_cpu / completed.max(1.0) * 1e3,
            postgres_cpu / completed.max(1.0) * 1e3,
            client_cpu / completed.max(1.0) * 1e3,
        ),
        peak_rss_kib: peak_rss,
    })
}

fn print(args: &QueryBenchArgs, figures: &QueryFigures) {
    let line = |latency: &LatencySummary| {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms
        )
    };
    let (service_ms, postgres_ms, client_ms) = figures.closed_cpu_ms_per_request;
    println!(
        "query bench: GetHourlyMetrics over {} days x {} event types ({} rows, {:.0} KiB per response){}",
        args.days,
        args.event_types,
        figures.rows,
        figures.response_bytes as f64 / 1024.0,
        if figures.summed { ", summed over types" } else { "" }
    );
    println!(
        "  clients            HTTP/2 max frame size {} B{}",
        args.max_frame_size,
        if args.gzip { "; accept gzip (responses compressed)" } else { "" }
    );
    println!(
        "  report cache       {}",
        if args.no_cache {
            "off: every request reads Postgres"
        } else {
            "on: requests answer from memory while no change of the customer was announced, else check the range's revision sum first"
        }
    );
    println!(
        "  fixed rate         {} req/s for {} s: {}, {} failed",
        figures.rate,
        args.seconds,
        line(&figures.fixed),
        figures.fixed_failures
    );
    println!(
        "                     achieved {:.0} req/s; query service CPU {:.2} ms per request",
        figures.fixed_achieved_rate, figures.fixed_cpu_ms_per_request
    );
    println!(
        "  max throughput     {} concurrent: {:.0} req/s, {}",
        args.concurrency,
        figures.max_rate,
        line(&figures.closed)
    );
    println!(
        "                     CPU per request: query service {service_ms:.2} ms, Postgres {postgres_ms:.2} ms, client (decoding) {client_ms:.2} ms"
    );
    println!("  query peak RSS     {:.1} MiB", figures.peak_rss_kib as f64 / 1024.0);
}
