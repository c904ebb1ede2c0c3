//! The `hourglass.v1.QueryService` implementation.
//!
//! Every call authenticates first (scope `query`), and every read is scoped to the key's customer: the
//! reader and the raw store are only ever asked for `principal.customer_id`. Requests are checked before
//! any database work: ranges on whole hours, within the configured limits; page sizes and tokens.

use std::sync::Arc;
use std::time::Instant;

use hourglass_core::api_key::Scope;
use hourglass_core::hour::SECONDS_PER_HOUR;
use hourglass_core::key_store::KeyStore;
use hourglass_core::raw_store::{RawStore, StoredEvent};
use hourglass_core::rollup_reader::{
    AppliedErasure as StoredAppliedErasure, HourStatus as StoredHourStatus, HourlyRollupRow, RollupReader,
};
use hourglass_grpc::auth::{Authenticator, Principal};
use hourglass_proto::encoded::Encoded;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::query_server::query_service_server::QueryService;
use hourglass_proto::query_server::{EncodedGetHourlyMetricsResponse, EncodedGetPeriodMetricsResponse};
use hourglass_proto::v1::property_value::Kind;
use hourglass_proto::v1::{AppliedErasure, GetPlanViolationsRequest, GetPlanViolationsResponse};
use hourglass_proto::v1::{
    Event, EventTypeSummary, GetHourStatusRequest, GetHourStatusResponse, GetHourlyMetricsRequest,
    GetHourlyMetricsResponse, GetLedgerRequest, GetLedgerResponse, GetPeriodMetricsRequest, GetPeriodMetricsResponse,
    Granularity, HourState, HourStatus, LedgerRow, ListEventTypesRequest, ListEventTypesResponse, ListRawEventsRequest,
    ListRawEventsResponse, MetricsRow, PeriodMetricsRow, PlanVersionChecks, PlanViolationCount, PlanViolationHour,
    PropertyValue, RawEvent, RejectionCount, RejectionReason, TimeRange,
};
use prost::Message;
use tonic::{Code, Request, Response, Status};

use crate::cache::{EncodedReport, ReportCache, ReportKey};
use crate::config::QueryConfig;
use crate::error::QueryError;
use crate::page_token::{PageTokens, RawEventsCursor};
use crate::report::{self, Period, timestamp};
use crate::report_body::ReportBody;
use crate::telemetry;

/// Page size when a request leaves it 0.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// The latest time a request may name (9999-12-31T23:00:00Z), so period arithmetic never overflows.
const LATEST_UNIX: i64 = 253_402_297_200;

/// The query service over a key store, a rollup reader and a raw store.
pub struct QueryServiceImpl<K, R, W> {
    authenticator: Arc<Authenticator<K>>,
    reader: Arc<R>,
    raw_store: Arc<W>,
    config: QueryConfig,
    page_tokens: PageTokens,
    cache: ReportCache,
}

impl<K: KeyStore, R: RollupReader, W: RawStore> QueryServiceImpl<K, R, W> {
    /// A service answering from `reader` and `raw_store`, authenticating with `authenticator`.
    pub fn new(
        authenticator: Arc<Authenticator<K>>,
        reader: Arc<R>,
        raw_store: Arc<W>,
        config: QueryConfig,
        page_tokens: PageTokens,
    ) -> Self {
        let cache = ReportCache::new(config.cache_entries, config.cache_max_bytes);
        Self { authenticator, reader, raw_store, config, page_tokens, cache }
    }

    /// The report cache (for tests: whether it follows the store's announcements).
    pub fn report_cache(&self) -> &ReportCache {
        &self.cache
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Arc<Principal>, QueryError> {
        Ok(self.authenticator.authenticate(request.metadata(), Scope::Query).await?)
    }

    /// The response to the report `key`, built from its rows by `respond`: from the cache while the
    /// range's rollups are unchanged (no read while no change of the customer was announced since the
    /// entry was checked, else one revision-sum read; then shared buffers handed to the transport),
    /// else read from the database, encoded once and kept. The response carries its [`ReportBody`], which
    /// the transport sends in place of encoding it (`crate::report_body`).
    async fn report<M>(
        &self,
        key: ReportKey,
        respond: impl FnOnce(Vec<MetricsRow>) -> M,
    ) -> Result<Response<Encoded<M>>, QueryError>
    where
        M: Message,
        Encoded<M>: Into<EncodedReport> + TryFrom<EncodedReport>,
    {
        let enabled = self.cache.enabled();
        // The stamp is read before the revision sum and the rows, so any change it does not cover either
        // shows in them or moves it.
        let stamp = match enabled {
            true => {
                self.cache.watch(&self.reader);
                self.cache.stamp(&key.customer_id)
            }
            false => None,
        };
        if let Some((response, body)) = stamp.and_then(|stamp| self.cache.get_unchanged(&key, stamp)) {
            metrics::counter!(telemetry::CACHE_LOOKUPS_TOTAL, "result" => "hit").increment(1);
            return Ok(body.attach(Response::new(response)));
        }
        let revision_sum = match enabled {
            true => Some(self.reader.revision_sum(&key.customer_id, key.from, key.to).await.map_err(QueryError::from)?),
            false => None,
        };
        if let Some((response, body)) = revision_sum.and_then(|sum| self.cache.get(&key, sum, stamp)) {
            metrics::counter!(telemetry::CACHE_LOOKUPS_TOTAL, "result" => "hit").increment(1);
            return Ok(body.attach(Response::new(response)));
        }
        metrics::counter!(telemetry::CACHE_LOOKUPS_TOTAL, "result" => "miss").increment(1);
        let rows = self.read_metrics(&key).await?;
        let response = Encoded::new(&respond(rows));
        let body = match revision_sum {
            Some(sum) => self.cache.put(key, sum, stamp, response.clone()),
            None => ReportBody::new(response.as_bytes().clone()),
        };
        Ok(body.attach(Response::new(response)))
    }

    /// The report rows of `key`: one customer's hours in `[from, to)` summed per period, per event type,
    /// over the filtered types, or over all types. The reads run one after the other, so a call holds one
    /// database connection at a time and concurrent calls never wait for a second while holding a first.
    async fn read_metrics(&self, key: &ReportKey) -> Result<Vec<MetricsRow>, QueryError> {
        let &ReportKey { ref customer_id, from, to, ref event_types, group_by_event_type, period } = key;
        let customer = customer_id.as_str();
        if !group_by_event_type && event_types.is_empty() {
            // Over all types: one stored totals row per hour (exact users; a sketch only to merge hours).
            let totals = self
                .reader
                .hourly_totals(customer, from, to, period != Period::Hour)
                .await
                .map_err(QueryError::from)?;
            let rows: Vec<HourlyRollupRow> = totals
                .into_iter()
                .map(|totals| HourlyRollupRow {
                    hour_start: totals.hour_start,
                    event_type: String::new(),
                    events: totals.events,
                    distinct_users: totals.distinct_users,
                    users_sketch: totals.users_sketch,
                })
                .collect();
            let mut numeric = self.reader.hourly_numeric(customer, from, to, &[]).await.map_err(QueryError::from)?;
            numeric.iter_mut().for_each(|row| row.event_type.clear());
            return report::summarize(&rows, &numeric, period, true).map_err(QueryError::from);
        }
        // Per event type and hour every report row is one stored row: exact, no sketches needed.
        let with_sketches = !(group_by_event_type && period == Period::Hour);
        let rows = self
            .reader
            .hourly_rollups(customer, from, to, event_types, with_sketches)
            .await
            .map_err(QueryError::from)?;
        let numeric = self.reader.hourly_numeric(customer, from, to, event_types).await.map_err(QueryError::from)?;
        report::summarize(&rows, &numeric, period, group_by_event_type).map_err(QueryError::from)
    }

    fn hourly_range(&self, range: Option<&TimeRange>) -> Result<(i64, i64), QueryError> {
        checked_range(range, i64::from(self.config.max_hourly_range_hours), "--query-max-hourly-range-hours")
    }

    fn period_range(&self, range: Option<&TimeRange>) -> Result<(i64, i64), QueryError> {
        checked_range(range, i64::from(self.config.max_period_range_days) * 24, "--query-max-period-range-days")
    }
}

/// Times a call, counts it by method and outcome, and answers its error with its status (the one place
/// a [`QueryError`] becomes one).
pub(crate) async fn observed<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, QueryError>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(error) => error.code(),
    };
    metrics::counter!(telemetry::REQUESTS_TOTAL, "method" => method, "code" => hourglass_grpc::server::code_label(code))
        .increment(1);
    metrics::histogram!(telemetry::REQUEST_SECONDS, "method" => method).record(started.elapsed().as_secs_f64());
    result.map_err(Status::from)
}

/// A timestamp as whole seconds on an hour boundary, within 1970..9999.
fn whole_hour(field: &str, time: Option<&Timestamp>) -> Result<i64, QueryError> {
    let time = time.ok_or_else(|| QueryError::invalid(field, "is required"))?;
    if time.nanos != 0 || time.seconds.rem_euclid(SECONDS_PER_HOUR) != 0 {
        return Err(QueryError::invalid(field, format!("{} is not on a whole hour (UTC)", describe_time(time))));
    }
    if !(0..=LATEST_UNIX).contains(&time.seconds) {
        return Err(QueryError::invalid(field, "must lie between 1970 and 9999"));
    }
    Ok(time.seconds)
}

fn describe_time(time: &Timestamp) -> String {
    chrono::DateTime::from_timestamp(time.seconds, time.nanos.clamp(0, 999_999_999) as u32)
        .map(|time| time.to_rfc3339())
        .unwrap_or_else(|| format!("{}s", time.seconds))
}

fn checked_range(range: Option<&TimeRange>, max_hours: i64, limit_flag: &str) -> Result<(i64, i64), QueryError> {
    let range = range.ok_or_else(|| QueryError::invalid("range", "is required"))?;
    let start = whole_hour("range.start", range.start.as_ref())?;
    let end = whole_hour("range.end", range.end.as_ref())?;
    if end <= start {
        return Err(QueryError::invalid("range", "end must be after start (the range is [start, end))"));
    }
    let hours = (end - start) / SECONDS_PER_HOUR;
    if hours > max_hours {
        return Err(QueryError::invalid(
            "range",
            format!("spans {hours} hours; at most {max_hours} are allowed ({limit_flag})"),
        ));
    }
    Ok((start, end))
}

fn event_type_filter(event_types: &[String]) -> Result<(), QueryError> {
    if event_types.len() > 1000 {
        return Err(QueryError::invalid("event_types", "at most 1000 event types per request"));
    }
    if event_types.iter().any(|event_type| event_type.is_empty()) {
        return Err(QueryError::invalid("event_types", "an event type must not be empty"));
    }
    Ok(())
}

/// The applied erasures of a range (by hour, then request) as each hour's list of messages.
fn erasures_by_hour(applied: Vec<StoredAppliedErasure>) -> std::collections::HashMap<i64, Vec<AppliedErasure>> {
    let mut by_hour: std::collections::HashMap<i64, Vec<AppliedErasure>> = std::collections::HashMap::new();
    for erasure in applied {
        by_hour.entry(erasure.hour_start).or_default().push(AppliedErasure {
            request_id: erasure.request_id,
            events_erased: erasure.events,
            revision: erasure.revision.unwrap_or(0),
            erased_at: erasure.erased_at.map(timestamp),
        });
    }
    by_hour
}

fn hour_status(status: StoredHourStatus) -> HourStatus {
    let state = match (status.revision, status.is_final) {
        (None, _) => HourState::Pending,
        (Some(_), false) => HourState::Provisional,
        (Some(_), true) => HourState::Final,
    };
    HourStatus {
        hour_start: Some(timestamp(status.hour_start)),
        state: state.into(),
        revision: status.revision.unwrap_or(0),
        logic_version: status.logic_version.unwrap_or(0),
        computed_at: status.computed_at.map(timestamp),
        final_as_of: status.final_as_of.filter(|_| status.is_final).map(timestamp),
        events: status.events,
        reaggregation_pending: status.pending && status.revision.is_some(),
        refused_reason: status.refused.unwrap_or_default(),
        erasures: Vec::new(),
    }
}

fn raw_event(stored: StoredEvent) -> RawEvent {
    let mut properties = std::collections::BTreeMap::new();
    let value = |kind| PropertyValue { kind: Some(kind) };
    for (name, text) in stored.string_properties {
        properties.insert(name, value(Kind::StringValue(text)));
    }
    for (name, number) in stored.number_properties {
        properties.insert(name, value(Kind::NumberValue(number)));
    }
    for (name, flag) in stored.bool_properties {
        properties.insert(name, value(Kind::BoolValue(flag)));
    }
    let millis = stored.occurred_at_ms;
    RawEvent {
        event: Some(Event {
            event_id: stored.event_id,
            event_type: stored.event_type,
            occurred_at: Some(Timestamp {
                seconds: millis.div_euclid(1000),
                nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
            }),
            user_id: stored.user_id,
            properties,
        }),
        batch_id: stored.batch_id,
    }
}

#[tonic::async_trait]
impl<K: KeyStore, R: RollupReader, W: RawStore> QueryService for QueryServiceImpl<K, R, W> {
    async fn get_hourly_metrics(
        &self,
        request: Request<GetHourlyMetricsRequest>,
    ) -> Result<Response<EncodedGetHourlyMetricsResponse>, Status> {
        observed("GetHourlyMetrics", async {
            let principal = self.authenticate(&request).await?;
            let request = request.into_inner();
            let (from, to) = self.hourly_range(request.range.as_ref())?;
            event_type_filter(&request.event_types)?;
            let key = ReportKey {
                customer_id: principal.customer_id.as_str().to_owned(),
                from,
                to,
                event_types: request.event_types,
                group_by_event_type: request.group_by_event_type,
                period: Period::Hour,
            };
            self.report(key, |rows| GetHourlyMetricsResponse { rows }).await
        })
        .await
    }

    async fn get_period_metrics(
        &self,
        request: Request<GetPeriodMetricsRequest>,
    ) -> Result<Response<EncodedGetPeriodMetricsResponse>, Status> {
        observed("GetPeriodMetrics", async {
            let principal = self.authenticate(&request).await?;
            let request = request.into_inner();
            let (from, to) = self.period_range(request.range.as_ref())?;
            let granularity = Granularity::try_from(request.granularity).unwrap_or(Granularity::Unspecified);
            let period = Period::of(granularity).ok_or_else(|| {
                QueryError::invalid(
                    "granularity",
                    "is required: GRANULARITY_DAY, GRANULARITY_WEEK or GRANULARITY_MONTH",
                )
            })?;
            event_type_filter(&request.event_types)?;
            let key = ReportKey {
                customer_id: principal.customer_id.as_str().to_owned(),
                from,
                to,
                event_types: request.event_types,
                group_by_event_type: request.group_by_event_type,
                period,
            };
            self.report(key, |rows| GetPeriodMetricsResponse {
                rows: rows
                    .into_iter()
                    .map(|metrics| {
                        let start = metrics.period_start.as_ref().map(|time| time.seconds).unwrap_or_default();
                        let complete = start >= from && period.end(start) <= to;
                        PeriodMetricsRow { metrics: Some(metrics), complete }
                    })
                    .collect(),
            })
            .await
        })
        .await
    }

    async fn list_event_types(
        &self,
        request: Request<ListEventTypesRequest>,
    ) -> Result<Response<ListEventTypesResponse>, Status> {
        observed("ListEventTypes", async {
            let principal = self.authenticate(&request).await?;
            let (from, to) = self.period_range(request.get_ref().range.as_ref())?;
            let seen =
                self.reader.event_types(principal.customer_id.as_str(), from, to).await.map_err(QueryError::from)?;
            let event_types = seen
                .into_iter()
                .map(|seen| EventTypeSummary {
                    event_type: seen.event_type,
                    events: seen.events,
                    first_hour: Some(timestamp(seen.first_hour)),
                    last_hour: Some(timestamp(seen.last_hour)),
                })
                .collect();
            Ok(Response::new(ListEventTypesResponse { event_types }))
        })
        .await
    }

    async fn get_hour_status(
        &self,
        request: Request<GetHourStatusRequest>,
    ) -> Result<Response<GetHourStatusResponse>, Status> {
        observed("GetHourStatus", async {
            let principal = self.authenticate(&request).await?;
            let (from, to) = self.hourly_range(request.get_ref().range.as_ref())?;
            let customer_id = principal.customer_id.as_str();
            let statuses = self.reader.hour_statuses(customer_id, from, to).await.map_err(QueryError::from)?;
            let mut erasures =
                erasures_by_hour(self.reader.applied_erasures(customer_id, from, to).await.map_err(QueryError::from)?);
            let hours = statuses
                .into_iter()
                .map(|status| {
                    let applied = erasures.remove(&status.hour_start).unwrap_or_default();
                    HourStatus { erasures: applied, ..hour_status(status) }
                })
                .collect();
            Ok(Response::new(GetHourStatusResponse { hours }))
        })
        .await
    }

    async fn get_ledger(&self, request: Request<GetLedgerRequest>) -> Result<Response<GetLedgerResponse>, Status> {
        observed("GetLedger", async {
            let principal = self.authenticate(&request).await?;
            let (from, to) = self.hourly_range(request.get_ref().range.as_ref())?;
            let customer_id = principal.customer_id.as_str();
            let ledger = self.reader.ledger(Some(customer_id), from, to).await.map_err(QueryError::from)?;
            let mut erasures =
                erasures_by_hour(self.reader.applied_erasures(customer_id, from, to).await.map_err(QueryError::from)?);
            let rows = ledger
                .into_iter()
                .map(|row| LedgerRow {
                    erasures: erasures.remove(&row.customer_hour.hour_start).unwrap_or_default(),
                    hour_start: Some(timestamp(row.customer_hour.hour_start)),
                    received: row.received,
                    accepted: row.accepted,
                    rejected: row.rejected,
                    throttled: row.throttled,
                    erased: row.erased,
                    stored: row.stored,
                    counted: row.counted,
                    r#final: row.is_final,
                    balanced: row.balances(),
                    rejected_by_reason: row
                        .rejected_by_reason
                        .iter()
                        .map(|(reason, events)| RejectionCount { reason: *reason, events: *events })
                        .collect(),
                })
                .collect();
            Ok(Response::new(GetLedgerResponse { rows }))
        })
        .await
    }

    async fn get_plan_violations(
        &self,
        request: Request<GetPlanViolationsRequest>,
    ) -> Result<Response<GetPlanViolationsResponse>, Status> {
        observed("GetPlanViolations", async {
            let principal = self.authenticate(&request).await?;
            let (from, to) = self.hourly_range(request.get_ref().range.as_ref())?;
            // The ledger rows GetLedger answers from: the two calls cannot disagree.
            let ledger =
                self.reader.ledger(Some(principal.customer_id.as_str()), from, to).await.map_err(QueryError::from)?;
            let hours = ledger
                .into_iter()
                .filter(|row| !row.plan_checks.is_empty())
                .map(|row| {
                    let mut hour = PlanViolationHour {
                        hour_start: Some(timestamp(row.customer_hour.hour_start)),
                        ..Default::default()
                    };
                    // Keys are ordered by version, type, rule, then rejected: the order the proto states.
                    for (key, events) in row.plan_checks {
                        if key.rule == RejectionReason::Unspecified as i32 {
                            hour.checked.push(PlanVersionChecks { plan_version: key.plan_version, events });
                        } else {
                            hour.violations.push(PlanViolationCount {
                                plan_version: key.plan_version,
                                event_type: key.event_type,
                                rule: key.rule,
                                rejected: key.rejected,
                                events,
                            });
                        }
                    }
                    hour
                })
                .collect();
            Ok(Response::new(GetPlanViolationsResponse { hours }))
        })
        .await
    }

    async fn list_raw_events(
        &self,
        request: Request<ListRawEventsRequest>,
    ) -> Result<Response<ListRawEventsResponse>, Status> {
        observed("ListRawEvents", async {
            let principal = self.authenticate(&request).await?;
            let request = request.into_inner();
            let hour_start = whole_hour("hour_start", request.hour_start.as_ref())?;
            let page_size = match request.page_size {
                0 => DEFAULT_PAGE_SIZE.min(self.config.max_page_size),
                size if size > self.config.max_page_size => {
                    return Err(QueryError::invalid(
                        "page_size",
                        format!("{size} is above the limit of {} (--query-max-page-size)", self.config.max_page_size),
                    ));
                }
                size => size,
            } as usize;
            let query = RawEventsCursor {
                customer_id: principal.customer_id.as_str().to_owned(),
                hour_start,
                event_type: request.event_type.clone(),
                bucket: 0,
                after_event_id: String::new(),
            };
            let cursor = if request.page_token.is_empty() {
                query
            } else {
                self.page_tokens
                    .decode(&request.page_token, &query)
                    .map_err(|error| QueryError::invalid("page_token", error.to_string()))?
            };
            let bucket_count = self.raw_store.bucket_count();
            if cursor.bucket >= bucket_count {
                return Err(QueryError::invalid("page_token", "refers to a bucket this store does not have"));
            }
            // Buckets in order, events by id within a bucket: a stable order to resume from. Each bucket
            // visited is one paged store read of what still fits (the store holds no more than that, so a
            // page of a huge bucket stays small), plus one event to tell whether the bucket goes on.
            let event_type = (!request.event_type.is_empty()).then_some(request.event_type.as_str());
            let mut events = Vec::with_capacity(page_size);
            let mut next = None;
            for bucket in cursor.bucket..bucket_count {
                let after_event_id = if bucket == cursor.bucket { cursor.after_event_id.as_str() } else { "" };
                let room = page_size - events.len();
                let mut stored = self
                    .raw_store
                    .read_bucket_page(
                        cursor.customer_id.as_str(),
                        hour_start,
                        bucket,
                        after_event_id,
                        event_type,
                        room + 1,
                    )
                    .await
                    .map_err(QueryError::from)?;
                if stored.len() > room {
                    stored.truncate(room);
                    let last = stored.last().map(|event| event.event_id.clone()).unwrap_or_default();
                    events.extend(stored);
                    next = Some((bucket, last));
                    break;
                }
                events.extend(stored);
                if events.len() == page_size && bucket + 1 < bucket_count {
                    next = Some((bucket + 1, String::new()));
                    break;
                }
            }
            let next_page_token = next
                .map(|(bucket, after_event_id)| {
                    self.page_tokens.encode(&RawEventsCursor { bucket, after_event_id, ..cursor.clone() })
                })
                .unwrap_or_default();
            Ok(Response::new(ListRawEventsResponse {
                events: events.into_iter().map(raw_event).collect(),
                next_page_token,
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64) -> TimeRange {
        TimeRange { start: Some(timestamp(start)), end: Some(timestamp(end)) }
    }

    #[test]
    fn ranges_must_be_whole_hours_ordered_and_within_the_limit() {
        let hour = 3600 * 480_000;
        assert_eq!(checked_range(Some(&range(hour, hour + 7200)), 24, "--flag").unwrap(), (hour, hour + 7200));
        let message = |result: Result<(i64, i64), QueryError>| Status::from(result.unwrap_err()).message().to_owned();
        assert!(message(checked_range(None, 24, "--flag")).contains("range: is required"));
        assert!(
            message(checked_range(Some(&range(hour + 60, hour + 7200)), 24, "--flag")).contains("not on a whole hour")
        );
        assert!(message(checked_range(Some(&range(hour, hour)), 24, "--flag")).contains("end must be after start"));
        assert!(
            message(checked_range(Some(&range(hour, hour + 25 * 3600)), 24, "--flag"))
                .contains("at most 24 are allowed (--flag)")
        );
        let mut fractional = range(hour, hour + 3600);
        fractional.start.as_mut().unwrap().nanos = 5;
        assert!(message(checked_range(Some(&fractional), 24, "--flag")).contains("range.start"));
        assert!(message(checked_range(Some(&range(-3600, 3600)), 24, "--flag")).contains("between 1970 and 9999"));
    }

    #[test]
    fn hour_states_follow_revision_and_finality() {
        let status = |revision: Option<u32>, is_final, pending| StoredHourStatus {
            hour_start: 0,
            revision,
            logic_version: revision.map(|_| 1),
            is_final,
            final_as_of: is_final.then_some(7200),
            computed_at: revision.map(|_| 7200),
            events: 3,
            pending,
            refused: None,
        };
        assert_eq!(hour_status(status(None, false, true)).state(), HourState::Pending);
        assert!(!hour_status(status(None, false, true)).reaggregation_pending);
        assert_eq!(hour_status(status(Some(1), false, false)).state(), HourState::Provisional);
        let final_hour = hour_status(status(Some(2), true, true));
        assert_eq!(final_hour.state(), HourState::Final);
        assert!(final_hour.reaggregation_pending);
        assert_eq!(final_hour.final_as_of, Some(timestamp(7200)));
        assert_eq!(final_hour.refused_reason, "", "no reason unless refused");
        let refused = StoredHourStatus { refused: Some("raw data expired".into()), ..status(Some(2), true, false) };
        let refused = hour_status(refused);
        assert_eq!((refused.state(), refused.refused_reason.as_str()), (HourState::Final, "raw data expired"));
    }
}
