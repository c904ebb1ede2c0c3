//! The gRPC `IngestService`: three ways to send batches, one way to process them
//! ([`Collector::begin_batch`]). The requests are `hourglass_proto::wire`'s, whose events are the
//! encoded bytes the client sent (slices of the request's buffer); the responses are the public ones.
//!
//! Streams are driven by [`drive_stream`]: it reads a batch only while fewer than
//! `--max-in-flight-batches` are unacknowledged, so a fast client is slowed by HTTP/2 flow control
//! rather than by the collector's memory growing. Acks are sent as batches complete, possibly out of
//! order. On shutdown a stream stops reading, acks what it holds, and ends with UNAVAILABLE so the client
//! reconnects (to another replica) and resends what was not acked.

use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use hourglass_core::api_key::Scope;
use hourglass_core::event_log::EventLog;
use hourglass_core::key_store::KeyStore;
use hourglass_core::tracking_plan::store::PlanStore;
use hourglass_proto::v1::{BatchAck, BatchStatus, IngestBatchResponse, IngestResponse, IngestStreamResponse};
use hourglass_proto::wire::v1::ingest_service_server::IngestService;
use hourglass_proto::wire::v1::{IngestBatchRequest, IngestRequest, IngestStreamRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::batch::{Collector, ThrottlePolicy};
use crate::error::CollectorError;
use crate::memory::{OpenStream, Reservation, held_bytes};
use crate::telemetry;
use hourglass_grpc::auth::{AuthError, Principal};

/// Most problem batches listed in a client stream's summary.
const MAX_PROBLEM_BATCHES: usize = 1000;

/// The `IngestService` implementation.
pub struct IngestServiceImpl<K, P, L> {
    collector: Arc<Collector<K, P, L>>,
    drain: CancellationToken,
}

impl<K: KeyStore, P: PlanStore, L: EventLog> IngestServiceImpl<K, P, L> {
    /// A service over `collector`; cancelling `drain` makes open streams finish and close.
    pub fn new(collector: Arc<Collector<K, P, L>>, drain: CancellationToken) -> Self {
        Self { collector, drain }
    }

    /// Counts a new stream of the caller's customer, or refuses it past `--max-streams-per-customer`.
    fn open_stream(&self, principal: &Principal) -> Result<OpenStream, Status> {
        self.collector.open_streams.open(&principal.customer_id).map_err(|open| {
            metrics::counter!(telemetry::STREAMS_REFUSED_TOTAL).increment(1);
            Status::from(CollectorError::TooManyStreams {
                customer_id: principal.customer_id.clone(),
                open,
                limit: self.collector.config.streams.max_streams_per_customer,
            })
        })
    }

    /// The caller: the principal [`Authenticated`](hourglass_grpc::authenticated::Authenticated) found
    /// from the headers before the message was decoded, or, for a service used without that wrapper, the
    /// key checked here.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Arc<Principal>, Status> {
        if let Some(principal) = hourglass_grpc::authenticated::principal_of(request) {
            return Ok(principal);
        }
        self.collector.authenticator.authenticate(request.metadata(), Scope::Ingest).await.map_err(|error| {
            let status = Status::from(CollectorError::from(error));
            count_refused(status.code());
            status
        })
    }
}

#[tonic::async_trait]
impl<K: KeyStore, P: PlanStore, L: EventLog> IngestService for IngestServiceImpl<K, P, L> {
    async fn ingest(&self, request: Request<Streaming<IngestRequest>>) -> Result<Response<IngestResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        let open_stream = self.open_stream(&principal)?;
        let inbound =
            request.into_inner().enumerate().map(|(index, message)| message.map(|batch| (index as u64, batch.events)));
        let (ack_tx, mut ack_rx) = mpsc::channel(self.collector.config.streams.max_in_flight_batches);
        let policy =
            ThrottlePolicy::WaitUpTo(std::time::Duration::from_millis(self.collector.config.quota.max_wait_ms));
        let driver = tokio::spawn(drive_stream(
            Arc::clone(&self.collector),
            StreamCaller { principal, _open_stream: open_stream },
            inbound,
            policy,
            ack_tx,
            |sent: BatchSent| sent,
            self.drain.clone(),
        ));

        let mut summary = IngestResponse::default();
        let mut end_status = None;
        while let Some(item) = ack_rx.recv().await {
            match item {
                Ok(sent) => add_to_summary(&mut summary, sent),
                Err(status) => end_status = Some(status),
            }
        }
        let _ = driver.await;
        summary.problem_batches.sort_by_key(|ack| ack.sequence);
        match end_status {
            // The stream failed after some batches were acked: the summary of what was accepted would be
            // lost with an error status, so it goes in the error's message.
            Some(status) => Err(Status::new(
                status.code(),
                format!(
                    "{} (before that: {} events accepted, {} rejected, {} throttled)",
                    status.message(),
                    summary.accepted_events,
                    summary.rejected_events,
                    summary.throttled_events
                ),
            )),
            None => Ok(Response::new(summary)),
        }
    }

    type IngestStreamStream = ReceiverStream<Result<IngestStreamResponse, Status>>;

    async fn ingest_stream(
        &self,
        request: Request<Streaming<IngestStreamRequest>>,
    ) -> Result<Response<Self::IngestStreamStream>, Status> {
        let principal = self.authenticate(&request).await?;
        let open_stream = self.open_stream(&principal)?;
        let inbound = request.into_inner().map(|message| message.map(|batch| (batch.sequence, batch.events)));
        let (response_tx, response_rx) = mpsc::channel(self.collector.config.streams.max_in_flight_batches);
        tokio::spawn(drive_stream(
            Arc::clone(&self.collector),
            StreamCaller { principal, _open_stream: open_stream },
            inbound,
            ThrottlePolicy::Reject,
            response_tx,
            |sent: BatchSent| IngestStreamResponse { ack: Some(sent.ack) },
            self.drain.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(response_rx)))
    }

    async fn ingest_batch(
        &self,
        request: Request<IngestBatchRequest>,
    ) -> Result<Response<IngestBatchResponse>, Status> {
        let principal = self.authenticate(&request).await?;
        let events = request.into_inner().events;
        let budget_wait = std::time::Duration::from_millis(self.collector.config.streams.budget_wait_ms);
        let Ok(reservation) =
            tokio::time::timeout(budget_wait, self.collector.memory_budget.reserve(held_bytes(&events))).await
        else {
            metrics::counter!(telemetry::BUDGET_REFUSALS_TOTAL).increment(1);
            return Err(CollectorError::MemoryBudgetFull.into());
        };
        let ack = self.collector.begin_batch(&principal, 0, events, ThrottlePolicy::Reject).await?.await;
        drop(reservation);
        let refused = match BatchStatus::try_from(ack.status) {
            Ok(BatchStatus::Accepted) => return Ok(Response::new(IngestBatchResponse { ack: Some(ack) })),
            Ok(BatchStatus::Throttled) => CollectorError::Throttled { retry_after_ms: ack.retry_after_ms },
            Ok(BatchStatus::Invalid) => CollectorError::InvalidBatch(ack.error_message),
            Ok(BatchStatus::Unavailable) => {
                CollectorError::BatchUnavailable { message: ack.error_message, retry_after_ms: ack.retry_after_ms }
            }
            Ok(BatchStatus::Unspecified) | Err(_) => CollectorError::NoBatchStatus,
        };
        Err(refused.into())
    }
}

/// Counts a call refused for its key.
pub(crate) fn count_refused(code: Code) {
    metrics::counter!(telemetry::AUTH_FAILURES_TOTAL, "code" => hourglass_grpc::server::code_label(code)).increment(1);
}

fn add_to_summary(summary: &mut IngestResponse, sent: BatchSent) {
    let BatchSent { events, ack } = sent;
    summary.batches += 1;
    summary.accepted_events += u64::from(ack.accepted_count);
    match BatchStatus::try_from(ack.status) {
        Ok(BatchStatus::Accepted) => summary.rejected_events += ack.rejections.len() as u64,
        Ok(BatchStatus::Throttled) => summary.throttled_events += events as u64,
        Ok(BatchStatus::Invalid) => summary.rejected_events += events as u64,
        Ok(BatchStatus::Unavailable | BatchStatus::Unspecified) | Err(_) => summary.unavailable_events += events as u64,
    }
    let is_problem = ack.status != BatchStatus::Accepted as i32 || !ack.rejections.is_empty();
    if is_problem {
        if summary.problem_batches.len() < MAX_PROBLEM_BATCHES {
            summary.problem_batches.push(ack);
        } else {
            summary.problem_batches_truncated = true;
        }
    }
}

/// Who a stream belongs to, counted among its customer's open streams until the stream ends.
pub(crate) struct StreamCaller {
    principal: Arc<Principal>,
    _open_stream: OpenStream,
}

/// A batch of a stream, waiting for room in the memory budget.
struct WaitingBatch {
    sequence: u64,
    events: Vec<Bytes>,
    reservation: futures::future::BoxFuture<'static, Reservation>,
}

/// A batch's ack with the number of events the batch had (which an ack of a refused batch cannot tell).
pub(crate) struct BatchSent {
    events: usize,
    ack: BatchAck,
}

/// Reads batches from `inbound`, keeps up to `max_in_flight_batches` of them publishing, and sends each
/// ack, shaped by `to_message`, (or the stream's final error) to `ack_tx`.
pub(crate) async fn drive_stream<K, P, L, S, T>(
    collector: Arc<Collector<K, P, L>>,
    caller: StreamCaller,
    inbound: S,
    policy: ThrottlePolicy,
    ack_tx: mpsc::Sender<Result<T, Status>>,
    to_message: fn(BatchSent) -> T,
    drain: CancellationToken,
) where
    K: KeyStore,
    P: PlanStore,
    L: EventLog,
    S: futures::Stream<Item = Result<(u64, Vec<Bytes>), Status>> + Send,
{
    metrics::gauge!(telemetry::ACTIVE_STREAMS).increment(1.0);
    let principal = Arc::clone(&caller.principal);
    let stream_config = &collector.config.streams;
    let max_in_flight = stream_config.max_in_flight_batches.max(1);
    let idle_timeout = stream_config.idle_stream_timeout();
    let ack_write_timeout = stream_config.ack_write_timeout();
    let mut inbound = pin!(inbound);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    let mut end_status: Option<Status> = None;
    let idle = tokio::time::sleep(idle_timeout);
    let mut idle = pin!(idle);
    // A decoded batch waiting for room in the memory budget; nothing more is read meanwhile.
    let mut waiting: Option<WaitingBatch> = None;

    loop {
        tokio::select! {
            biased;
            Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                match ack_tx.send_timeout(Ok(to_message(sent)), ack_write_timeout).await {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                        break; // the client went away; its unacked batches are its to resend
                    }
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        // The client reads no acks: stop holding its batches. Its stream ends when it
                        // reads what is queued; whatever it sent after is unacked, for it to resend.
                        metrics::counter!(telemetry::STALLED_STREAMS_TOTAL).increment(1);
                        tracing::warn!(
                            timeout_secs = ack_write_timeout.as_secs(),
                            in_flight = in_flight.len(),
                            "a client read no ack for --ack-write-timeout-secs: ending its stream"
                        );
                        end_status = None;
                        break;
                    }
                }
                idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
            }
            () = drain.cancelled(), if reading => {
                reading = false;
                end_status = Some(CollectorError::ShuttingDown.into());
            }
            () = &mut idle, if reading && in_flight.is_empty() && waiting.is_none() => {
                reading = false;
                end_status = Some(CollectorError::IdleStream { idle_secs: idle_timeout.as_secs() }.into());
            }
            reservation = async { waiting.as_mut().expect("guarded").reservation.as_mut().await }, if waiting.is_some() => {
                let WaitingBatch { sequence, events, .. } = waiting.take().expect("guarded");
                let batch_events = events.len();
                // A long stream re-checks its key (from the cache) so a revocation takes effect.
                match collector.authenticator.authorize(principal.key_hash, Scope::Ingest).await {
                    Ok(_) => match collector.begin_batch(&principal, sequence, events, policy).await {
                        Ok(ack) => {
                            // The batch's room in the budget is given back once its ack is decided.
                            in_flight.push(
                                ack.map(move |ack| {
                                    drop(reservation);
                                    BatchSent { events: batch_events, ack }
                                })
                                .boxed(),
                            );
                        }
                        Err(error) => {
                            // An undecodable event ends the stream, as an undecodable message does.
                            reading = false;
                            end_status = Some(error.into());
                        }
                    },
                    Err(error @ (AuthError::Revoked(_) | AuthError::Unknown | AuthError::WrongScope { .. })) => {
                        reading = false;
                        end_status = Some(error.into());
                    }
                    Err(error) => {
                        // The key store is unreachable and the cache expired: the batch is not
                        // acked, the stream goes on.
                        let ack = BatchAck {
                            sequence,
                            status: BatchStatus::Unavailable.into(),
                            retry_after_ms: 1000,
                            error_message: error.to_string(),
                            ..Default::default()
                        };
                        in_flight.push(futures::future::ready(BatchSent { events: batch_events, ack }).boxed());
                    }
                }
            }
            message = inbound.next(), if reading && waiting.is_none() && in_flight.len() < max_in_flight => {
                idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                match message {
                    None => reading = false,
                    Some(Err(status)) => {
                        reading = false;
                        end_status = Some(status);
                    }
                    Some(Ok((sequence, events))) => {
                        let bytes = held_bytes(&events);
                        let budget = Arc::clone(&collector);
                        let reservation = async move { budget.memory_budget.reserve(bytes).await }.boxed();
                        waiting = Some(WaitingBatch { sequence, events, reservation });
                    }
                }
            }
            else => break,
        }
    }
    if let Some(status) = end_status {
        // Bounded like every ack: a client that stopped reading must not hold this task forever.
        let _ = ack_tx.send_timeout(Err(status), ack_write_timeout).await;
    }
    metrics::gauge!(telemetry::ACTIVE_STREAMS).decrement(1.0);
}
