//! One trace from the collector's batch to the ingestor's write of it, through real Kafka and through
//! standalone's `log.db`: the collector puts its batch span's W3C trace context in the record's headers,
//! and the ingest loop's span for the record continues it (`hourglass_core::trace_context`). Spans are
//! collected by the OpenTelemetry SDK's in-memory exporter; the binary's OTLP exporter is not involved.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::event_log::{EventLog, EventLogConsumer, Topic};
use hourglass_core::key_store::KeyStore;
use hourglass_core::record;
use hourglass_embedded::log::{INGEST_CONSUMER, SqliteEventLog};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_ingestor::{EmbeddedIngestConfig, IngestLoopConfig, IngestorConfig};
use hourglass_kafka::{KafkaEventLog, KafkaEventLogConsumer, testing as kafka_testing};
use hourglass_proto::log::v1::EventBatchRecord;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::{Event, IngestBatchRequest};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// Spans as the binary's OpenTelemetry layer would export them, kept in memory, for the spans of one
/// customer (each test has its own).
struct Traces {
    exporter: InMemorySpanExporter,
    customer: &'static str,
}

/// The process's subscriber, as the binary installs it: global, because the stores' drivers finish some
/// spans on threads of their own (sqlx's SQLite worker), where a thread-local default would not be seen.
fn collect_traces(customer: &'static str) -> Traces {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    let exporter = EXPORTER.get_or_init(|| {
        // What `hourglass` sets when it exports traces.
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        // At `info`, as the binary's default filter: the gRPC stack's own trace-level spans stay out.
        let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(otel_layer.with_filter(LevelFilter::INFO));
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber in this test binary");
        exporter
    });
    Traces { exporter: exporter.clone(), customer }
}

impl Traces {
    /// The ended spans of this test's traces: those naming its customer, and their descendants.
    fn finished(&self) -> Vec<SpanData> {
        let spans = self.exporter.get_finished_spans().unwrap();
        let traces: Vec<TraceId> = spans
            .iter()
            .filter(|span| attribute(span, "customer_id").as_deref() == Some(self.customer))
            .map(|span| span.span_context.trace_id())
            .collect();
        spans.into_iter().filter(|span| traces.contains(&span.span_context.trace_id())).collect()
    }

    /// Waits until `count` spans named `name` have ended; fails the test after a minute.
    async fn wait_for_spans(&self, name: &str, count: usize) -> Vec<SpanData> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let spans = self.finished();
            let named: Vec<SpanData> = spans.iter().filter(|span| span.name == name).cloned().collect();
            if named.len() >= count {
                return named;
            }
            let names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
            assert!(Instant::now() < deadline, "{count} {name} spans did not end within a minute; ended: {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The one ended span named `name` with `parent` as its parent.
    fn child_of(&self, parent: SpanId, name: &str) -> SpanData {
        let children: Vec<SpanData> =
            self.finished().into_iter().filter(|span| span.name == name && span.parent_span_id == parent).collect();
        assert_eq!(children.len(), 1, "one {name} span under {parent}: {children:#?}");
        children.into_iter().next().unwrap()
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|attribute| attribute.key.as_str() == key).map(|attribute| attribute.value.to_string())
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The embedded raw store and meta store (keys, job queue), in a directory of the test's own.
struct EmbeddedStores {
    data_dir: tempfile::TempDir,
    raw_store: Arc<SqliteRawStore>,
    meta: Arc<SqliteMetaStore>,
}

async fn embedded_stores() -> EmbeddedStores {
    let data_dir = tempfile::tempdir().unwrap();
    let raw_store = Arc::new(SqliteRawStore::open(data_dir.path(), 4).await.unwrap());
    let meta = Arc::new(SqliteMetaStore::open(data_dir.path()).await.unwrap());
    EmbeddedStores { data_dir, raw_store, meta }
}

/// Sends one batch through a real collector publishing to `event_log`, and appends one record without
/// a trace context straight to the log (as a record from before tracing, or a re-injected one, is).
async fn publish<L: EventLog>(event_log: Arc<L>, meta: &Arc<SqliteMetaStore>, customer: &str) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let collector = tokio::spawn(hourglass_collector::run(
        hourglass_collector::CollectorConfig::with_defaults(address),
        Arc::clone(meta),
        Arc::clone(meta),
        Arc::clone(&event_log),
        listener,
        shutdown.clone(),
    ));
    let key = meta.create_key(&CustomerId::new(customer).unwrap(), Scope::Ingest, "").await.unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let events = (0..10)
        .map(|index| Event {
            event_id: format!("traced-{index}"),
            event_type: "page_view".to_owned(),
            occurred_at: Some(Timestamp { seconds: now_secs() - index, nanos: 0 }),
            ..Default::default()
        })
        .collect();
    let mut request = tonic::Request::new(IngestBatchRequest { events });
    request.metadata_mut().insert("authorization", format!("Bearer {}", key.expose_secret()).parse().unwrap());
    IngestServiceClient::new(channel).ingest_batch(request).await.unwrap();
    shutdown.cancel();
    collector.await.unwrap().unwrap();

    let untraced = EventBatchRecord {
        customer_id: customer.to_owned(),
        received_at_unix_ms: now_secs() * 1000,
        batch_id: "untraced".to_owned(),
        collector_id: "test".to_owned(),
        events: vec![Event {
            event_id: "untraced-0".to_owned(),
            event_type: "page_view".to_owned(),
            occurred_at: Some(Timestamp { seconds: now_secs(), nanos: 0 }),
            ..Default::default()
        }],
        outcomes: Vec::new(),
        plan_checks: Vec::new(),
    };
    event_log.append(Topic::Events, record::encode(customer.to_owned(), &untraced)).await.unwrap();
}

/// Runs the ingest loop over `consumer` until both records' spans have ended (after their hours were
/// marked), then checks the traced batch is one trace from the collector to the mark, and the untraced
/// record a trace of its own.
async fn ingest_and_check_one_trace<C: EventLogConsumer, L: EventLog>(
    traces: &Traces,
    config: IngestLoopConfig,
    consumer: C,
    stores: &EmbeddedStores,
    dead_letter_log: Arc<L>,
) {
    let shutdown = CancellationToken::new();
    let ingestor = tokio::spawn(hourglass_ingestor::run(
        config,
        consumer,
        Arc::clone(&stores.raw_store),
        Arc::clone(&stores.meta),
        dead_letter_log,
        hourglass_ingestor::Suppression::none(),
        shutdown.clone(),
    ));
    let record_spans = traces.wait_for_spans("ingestor.record", 2).await;
    shutdown.cancel();
    ingestor.await.unwrap().unwrap();

    let batch_spans = traces.wait_for_spans("collector.batch", 1).await;
    assert_eq!(batch_spans.len(), 1, "one batch was sent: {batch_spans:#?}");
    let batch_span = &batch_spans[0];
    let batch_id = attribute(batch_span, "batch_id").expect("the batch span names its batch");
    let trace_id: TraceId = batch_span.span_context.trace_id();

    let (traced, untraced): (Vec<_>, Vec<_>) =
        record_spans.iter().partition(|span| attribute(span, "batch_id").as_deref() == Some(batch_id.as_str()));
    assert_eq!(traced.len(), 1, "the batch is one record: {record_spans:#?}");
    let record_span = traced[0];
    assert_eq!(record_span.span_context.trace_id(), trace_id, "the ingestor's span continues the collector's trace");
    assert_eq!(record_span.parent_span_id, batch_span.span_context.span_id(), "a child of the batch span");
    let write_span = traces.child_of(record_span.span_context.span_id(), "ingestor.raw_write");
    assert_eq!(write_span.span_context.trace_id(), trace_id, "the raw write is in the batch's trace");
    let mark_span = traces.child_of(record_span.span_context.span_id(), "ingestor.mark_dirty");
    assert_eq!(mark_span.span_context.trace_id(), trace_id, "the dirty mark is in the batch's trace");

    assert_eq!(untraced.len(), 1, "{record_spans:#?}");
    assert_eq!(attribute(untraced[0], "batch_id").as_deref(), Some("untraced"));
    assert_ne!(untraced[0].span_context.trace_id(), trace_id, "a record without a context starts a new trace");
    assert_eq!(untraced[0].parent_span_id, SpanId::INVALID, "and is its root");
}

#[tokio::test]
async fn one_trace_spans_the_collector_kafka_and_the_ingestor() {
    let traces = collect_traces("kafka-traced");
    let stores = embedded_stores().await;
    let kafka = kafka_testing::test_config("trace_propagation", &kafka_testing::test_brokers());
    let event_log = Arc::new(KafkaEventLog::connect(kafka.clone(), "test-producer").await.unwrap());
    publish(Arc::clone(&event_log), &stores.meta, traces.customer).await;

    let mut config = IngestorConfig::with_defaults();
    config.group_id = "trace-propagation".to_owned();
    config.commit_interval_ms = 100;
    let consumer = KafkaEventLogConsumer::subscribe(&kafka, Topic::Events, &config.group_id, "hourglass-ingestor")
        .expect("subscribe to the test topic");
    ingest_and_check_one_trace(&traces, config.loop_config(), consumer, &stores, Arc::clone(&event_log)).await;

    let topics = [kafka.events_topic.as_str(), kafka.dead_letter_topic.as_str()];
    let _ = hourglass_kafka::admin::delete_topics(&kafka, &topics).await;
}

#[tokio::test]
async fn one_trace_spans_the_collector_the_embedded_log_and_the_ingestor() {
    let traces = collect_traces("embedded-traced");
    let stores = embedded_stores().await;
    let log = Arc::new(SqliteEventLog::open(stores.data_dir.path()).await.unwrap());
    publish(Arc::clone(&log), &stores.meta, traces.customer).await;

    let consumer = log.events_consumer(INGEST_CONSUMER, None).await.unwrap();
    let config = EmbeddedIngestConfig::with_defaults();
    ingest_and_check_one_trace(&traces, config.loop_config(), consumer, &stores, Arc::clone(&log)).await;
}
