//! The query service against real Postgres and the real CQL server: reports equal brute-force counts of
//! the generated events (rolled up by the real aggregator), a key never reads another customer's data,
//! cached reports are the uncached ones, GetPlanViolations agrees with the ledger, GetHourStatus and
//! GetLedger show the erasures applied to an hour, and bad requests get clear INVALID_ARGUMENT errors.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use hourglass_core::tracking_plan::PlanRule;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::query_server::query_service_server::QueryService;
use hourglass_proto::v1::{
    GetHourStatusRequest, GetHourlyMetricsRequest, GetLedgerRequest, GetPeriodMetricsRequest, GetPlanViolationsRequest,
    Granularity, HourState, ListEventTypesRequest, ListRawEventsRequest, RejectionReason, TimeRange,
};
use hourglass_query::QueryConfig;
use support::{ACME_PLAN_CHECKS, ACME_REJECTIONS, at, authorized, brute_force, data_hours, range, sketch_estimate};
use tonic::Code;

fn within(estimate: u64, truth: usize) -> bool {
    (estimate as f64 - truth as f64).abs() <= (truth as f64 * 0.05).max(2.0)
}

#[tokio::test]
async fn reports_equal_a_brute_force_count_of_the_events() {
    let platform = support::start("query_reports").await;
    let mut client = platform.client().await;
    let expected = brute_force(&platform.acme_events);
    let hours = data_hours();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);

    // Hourly, per event type: exact events, exact distinct users, exact numeric stats.
    let hourly = client
        .get_hourly_metrics(authorized(
            &platform.acme_key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: vec![], group_by_event_type: true },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(hourly.len(), expected.len(), "one row per (hour, type) with data");
    for (row, ((hour, event_type), truth)) in hourly.iter().zip(&expected) {
        assert_eq!(row.period_start.as_ref().unwrap().seconds, *hour);
        assert_eq!(&row.event_type, event_type);
        assert_eq!(row.events, truth.event_ids.len() as u64, "{event_type} at {hour}");
        assert_eq!(row.distinct_users, truth.users.len() as u64, "{event_type} at {hour}");
        assert!(!row.distinct_users_estimated);
        let price = row.numeric.iter().find(|stats| stats.property == "price").expect("price stats");
        assert_eq!(price.count, truth.prices.len() as u64);
        assert_eq!(price.sum, truth.prices.values().sum::<f64>());
        assert_eq!(price.min, truth.prices.values().cloned().fold(f64::INFINITY, f64::min));
        assert_eq!(price.max, truth.prices.values().cloned().fold(f64::NEG_INFINITY, f64::max));
    }

    // Filtered to two types, summed over them per hour: exact events, estimated users.
    let filter = vec!["click".to_owned(), "view".to_owned()];
    let summed = client
        .get_hourly_metrics(authorized(
            &platform.acme_key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: filter.clone(), group_by_event_type: false },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(summed.len(), hours.len());
    for (row, hour) in summed.iter().zip(&hours) {
        let (mut ids, mut users) = (0, BTreeSet::new());
        for event_type in &filter {
            if let Some(truth) = expected.get(&(*hour, event_type.clone())) {
                ids += truth.event_ids.len();
                users.extend(truth.users.iter().cloned());
            }
        }
        assert_eq!(row.event_type, "");
        assert_eq!(row.events, ids as u64);
        assert!(row.distinct_users_estimated);
        assert_eq!(row.distinct_users, sketch_estimate(&users), "the merged sketch is the sketch of the union");
        assert!(within(row.distinct_users, users.len()), "{} vs {}", row.distinct_users, users.len());
    }

    // Over all types per hour: the stored totals, so distinct users are exact (a user of two types once).
    let totals = client
        .get_hourly_metrics(authorized(
            &platform.acme_key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: vec![], group_by_event_type: false },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(totals.len(), hours.len());
    for (row, hour) in totals.iter().zip(&hours) {
        let (mut ids, mut users) = (0, BTreeSet::new());
        for ((_, _), truth) in expected.range((*hour, String::new())..(*hour + 1, String::new())) {
            ids += truth.event_ids.len();
            users.extend(truth.users.iter().cloned());
        }
        assert_eq!((row.events, row.distinct_users), (ids as u64, users.len() as u64), "hour {hour}");
        assert!(!row.distinct_users_estimated, "an hour's users over all types are stored exactly");
        let price = row.numeric.iter().find(|stats| stats.property == "price").expect("price over all types");
        let prices: u64 = expected
            .range((*hour, String::new())..(*hour + 1, String::new()))
            .map(|(_, truth)| truth.prices.len() as u64)
            .sum();
        assert_eq!(price.count, prices);
    }
    // A day over all types merges one sketch per hour: the sketch of the day's users.
    let days = client
        .get_period_metrics(authorized(
            &platform.acme_key,
            GetPeriodMetricsRequest {
                range: range(from, to),
                granularity: Granularity::Day.into(),
                event_types: vec![],
                group_by_event_type: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    for row in &days {
        let metrics = row.metrics.as_ref().unwrap();
        let start = metrics.period_start.as_ref().unwrap().seconds;
        let users: BTreeSet<String> = expected
            .range((start, String::new())..(start + 86_400, String::new()))
            .flat_map(|(_, truth)| truth.users.iter().cloned())
            .collect();
        let hours_of_day = hours.iter().filter(|hour| (start..start + 86_400).contains(*hour)).count();
        if hours_of_day > 1 {
            assert!(metrics.distinct_users_estimated);
            assert_eq!(metrics.distinct_users, sketch_estimate(&users), "the merged sketch is the sketch of the day");
        } else {
            assert_eq!(metrics.distinct_users, users.len() as u64, "one hour's users are exact");
        }
    }

    // Daily, weekly, monthly per type: events add up exactly; users are the merged sketch of the union.
    for granularity in [Granularity::Day, Granularity::Week, Granularity::Month] {
        let rows = client
            .get_period_metrics(authorized(
                &platform.acme_key,
                GetPeriodMetricsRequest {
                    range: range(from, to),
                    granularity: granularity.into(),
                    event_types: vec![],
                    group_by_event_type: true,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .rows;
        let mut truth: BTreeMap<(i64, String), (usize, BTreeSet<String>)> = BTreeMap::new();
        for ((hour, event_type), figures) in &expected {
            let start = hourglass_query::report::Period::of(granularity).unwrap().start(*hour);
            let entry = truth.entry((start, event_type.clone())).or_default();
            entry.0 += figures.event_ids.len();
            entry.1.extend(figures.users.iter().cloned());
        }
        assert_eq!(rows.len(), truth.len(), "{granularity:?}");
        for (row, ((start, event_type), (events, users))) in rows.iter().zip(&truth) {
            let metrics = row.metrics.as_ref().unwrap();
            assert_eq!(metrics.period_start.as_ref().unwrap().seconds, *start, "{granularity:?}");
            assert_eq!(&metrics.event_type, event_type);
            assert_eq!(metrics.events, *events as u64, "{granularity:?} {event_type}");
            assert!(
                within(metrics.distinct_users, users.len()),
                "{granularity:?}: {} vs {}",
                metrics.distinct_users,
                users.len()
            );
            // The range runs from 23:00 on 31 October to 02:00 on 2 November: only 1 November is whole.
            let period = hourglass_query::report::Period::of(granularity).unwrap();
            assert_eq!(row.complete, *start >= from && period.end(*start) <= to);
            assert_eq!(row.complete, granularity == Granularity::Day && *start == at("2026-11-01T00:00:00Z"));
        }
    }
    let months: Vec<i64> = client
        .get_period_metrics(authorized(
            &platform.acme_key,
            GetPeriodMetricsRequest {
                range: range(from, to),
                granularity: Granularity::Month.into(),
                event_types: vec![],
                group_by_event_type: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows
        .iter()
        .map(|row| row.metrics.as_ref().unwrap().period_start.as_ref().unwrap().seconds)
        .collect();
    assert_eq!(months, vec![at("2026-10-01T00:00:00Z"), at("2026-11-01T00:00:00Z")]);

    // Event types with their totals.
    let types = client
        .list_event_types(authorized(&platform.acme_key, ListEventTypesRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    let names: Vec<&str> = types.iter().map(|summary| summary.event_type.as_str()).collect();
    assert_eq!(names, support::EVENT_TYPES);
    for summary in &types {
        let total: usize = expected
            .iter()
            .filter(|((_, event_type), _)| *event_type == summary.event_type)
            .map(|(_, truth)| truth.event_ids.len())
            .sum();
        assert_eq!(summary.events, total as u64);
    }

    // Hour status: every hour final, first revision, current logic.
    let statuses = client
        .get_hour_status(authorized(&platform.acme_key, GetHourStatusRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .hours;
    assert_eq!(statuses.len(), hours.len());
    for (status, hour) in statuses.iter().zip(&hours) {
        assert_eq!(status.hour_start.as_ref().unwrap().seconds, *hour);
        assert_eq!(status.state(), HourState::Final);
        assert_eq!((status.revision, status.logic_version), (1, hourglass_aggregator::rollup::LOGIC_VERSION));
        assert!(status.final_as_of.is_some() && status.computed_at.is_some());
        assert!(!status.reaggregation_pending);
        let events: usize =
            expected.iter().filter(|((h, _), _)| h == hour).map(|(_, truth)| truth.event_ids.len()).sum();
        assert_eq!(status.events, events as u64);
    }

    // Ledger: what the collectors accepted (redelivery and resend included once by batch id) = stored = counted,
    // and the rejected events by reason.
    let ledger = client
        .get_ledger(authorized(&platform.acme_key, GetLedgerRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(ledger.len(), hours.len());
    for (hour_index, (row, hour)) in ledger.iter().zip(&hours).enumerate() {
        let events: usize =
            expected.iter().filter(|((h, _), _)| h == hour).map(|(_, truth)| truth.event_ids.len()).sum();
        assert_eq!((row.accepted, row.stored, row.counted), (events as u64, events as u64, events as u64));
        assert!(row.balanced && row.r#final);
        let reasons: Vec<(RejectionReason, u64)> = ACME_REJECTIONS
            .iter()
            .filter(|(index, _, _)| *index == hour_index)
            .map(|(_, reason, count)| (*reason, u64::from(*count)))
            .collect();
        let by_reason: Vec<(RejectionReason, u64)> =
            row.rejected_by_reason.iter().map(|count| (count.reason(), count.events)).collect();
        assert_eq!(by_reason, reasons, "rejections by reason at {hour}");
        assert_eq!(row.rejected, reasons.iter().map(|(_, count)| count).sum::<u64>(), "rejected at {hour}");
        assert_eq!(row.received, row.accepted + row.rejected + row.throttled);
    }

    // The tracking plan's figures come from the same ledger rows: its rejected counts are the ledger's
    // rejections of the plan's reasons, and the hours it checked nothing are absent.
    let plan_hours = client
        .get_plan_violations(authorized(&platform.acme_key, GetPlanViolationsRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .hours;
    let plan_hour_starts: Vec<i64> = plan_hours.iter().map(|hour| hour.hour_start.as_ref().unwrap().seconds).collect();
    assert_eq!(plan_hour_starts, [hours[2]], "only the hour a plan checked");
    let checked: Vec<(u32, u64)> =
        plan_hours[0].checked.iter().map(|checked| (checked.plan_version, checked.events)).collect();
    assert_eq!(checked, [(2, 7)]);
    let violations: Vec<(u32, &str, RejectionReason, bool, u64)> = plan_hours[0]
        .violations
        .iter()
        .map(|count| (count.plan_version, count.event_type.as_str(), count.rule(), count.rejected, count.events))
        .collect();
    let expected_violations: Vec<(u32, &str, RejectionReason, bool, u64)> = ACME_PLAN_CHECKS
        .iter()
        .filter(|(_, _, rule, _, _)| *rule != RejectionReason::Unspecified)
        .map(|(_, event_type, rule, rejected, count)| (2, *event_type, *rule, *rejected, u64::from(*count)))
        .collect();
    assert_eq!(violations, expected_violations);
    for row in &ledger {
        let plan_hour = plan_hours.iter().find(|hour| hour.hour_start == row.hour_start);
        for rejection in &row.rejected_by_reason {
            if PlanRule::from_reason(rejection.reason()).is_none() {
                continue;
            }
            let from_plan: u64 = plan_hour
                .iter()
                .flat_map(|hour| &hour.violations)
                .filter(|count| count.rejected && count.rule == rejection.reason)
                .map(|count| count.events)
                .sum();
            assert_eq!(
                from_plan,
                rejection.events,
                "the ledger and GetPlanViolations agree on {:?}",
                rejection.reason()
            );
        }
    }
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

#[tokio::test]
async fn a_report_answered_from_the_cache_follows_late_data() {
    let platform = support::start("query_cache").await;
    let mut client = platform.client().await;
    let hours = data_hours();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    let report = |key: &str| {
        authorized(
            key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: vec![], group_by_event_type: false },
        )
    };
    let total = |rows: &[hourglass_proto::v1::MetricsRow]| rows.iter().map(|row| row.events).sum::<u64>();
    let first = client.get_hourly_metrics(report(&platform.acme_key)).await.unwrap().into_inner().rows;
    let again = client.get_hourly_metrics(report(&platform.acme_key)).await.unwrap().into_inner().rows;
    assert_eq!(first, again, "the same report twice");
    assert_eq!(total(&first), platform.acme_events.len() as u64);

    // Late events re-aggregate an hour: the report shows them as soon as the service heard the
    // completion's announcement (delivered at its commit; `cached_responses_...` checks it is never
    // used stale after that), and keeps showing them.
    let mut late = support::generate("acme", &hours[1..2], 3);
    for (index, event) in late.iter_mut().enumerate() {
        event.event_id = format!("acme-late-{index}");
    }
    platform.ingest_late("acme", late).await;
    let expected = platform.acme_events.len() as u64 + 3;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let after = client.get_hourly_metrics(report(&platform.acme_key)).await.unwrap().into_inner().rows;
        if total(&after) == expected {
            break;
        }
        assert_eq!(total(&after), platform.acme_events.len() as u64, "the cached rows or the new ones, nothing else");
        assert!(tokio::time::Instant::now() < deadline, "the late events never showed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let again = client.get_hourly_metrics(report(&platform.acme_key)).await.unwrap().into_inner().rows;
    assert_eq!(total(&again), expected);
    // Another customer's report is its own entry.
    let globex = client.get_hourly_metrics(report(&platform.globex_key)).await.unwrap().into_inner().rows;
    assert_eq!(total(&globex), platform.globex_events.len() as u64);
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

#[tokio::test]
async fn a_lost_listener_connection_sends_the_cache_back_to_the_revision_sum() {
    let platform = support::start("query_cache_listener").await;
    let cached = platform.service(QueryConfig::with_defaults()).await;
    let hours = data_hours();
    let request = GetHourlyMetricsRequest {
        range: range(hours[0], hours[hours.len() - 1] + 3600),
        event_types: vec![],
        group_by_event_type: true,
    };
    let key = platform.acme_key.as_str();
    let events = |response: hourglass_proto::query_server::EncodedGetHourlyMetricsResponse| {
        response.to_message().unwrap().rows.iter().map(|row| row.events).sum::<u64>()
    };
    let changes = || cached.report_cache().changes();
    let first = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
    support::wait_for("the rollup change listener", || changes().is_listening()).await;
    let hit = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
    assert_eq!(hit.as_bytes().as_ptr(), first.as_bytes().as_ptr());
    let epochs = changes().epochs_started();

    // A revision written without an announcement (straight into the table, as no writer of the store
    // does) stands for one whose announcement was lost: while the listener stays connected the cache
    // does not read the sum, so it keeps answering from the entry.
    let pool = sqlx::PgPool::connect(&platform.database_url).await.unwrap();
    let bumped = sqlx::query(
        "UPDATE hour_revisions SET revision = revision + 1 WHERE customer_id = 'acme' AND hour_start = to_timestamp($1)",
    )
    .bind(hours[1] as f64)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(bumped.rows_affected(), 1);
    let unannounced = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
    assert_eq!(unannounced.as_bytes().as_ptr(), first.as_bytes().as_ptr(), "no sum read while listening");

    // Only this service listens in the test's database (the platform's server has had no request).
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %') AS terminated",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(terminated, 1, "the listener's connection");
    // Announcements may have been lost while it was down: the new connection's epoch makes every entry
    // be checked against the sum again, which finds the unannounced revision.
    support::wait_for("the listener to reconnect", || changes().is_listening() && changes().epochs_started() > epochs)
        .await;
    let after = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
    assert_ne!(after.as_bytes().as_ptr(), first.as_bytes().as_ptr(), "the entry was checked again");
    assert_eq!(events(after), platform.acme_events.len() as u64);
    pool.close().await;
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

/// The report requests the cache tests ask: hourly and period, per type, summed and filtered.
fn report_requests(from: i64, to: i64) -> (Vec<GetHourlyMetricsRequest>, Vec<GetPeriodMetricsRequest>) {
    let filter = vec!["click".to_owned(), "view".to_owned()];
    let hourly = |event_types: &[String], group_by_event_type| GetHourlyMetricsRequest {
        range: range(from, to),
        event_types: event_types.to_vec(),
        group_by_event_type,
    };
    let period = |granularity: Granularity, event_types: &[String], group_by_event_type| GetPeriodMetricsRequest {
        range: range(from, to),
        granularity: granularity.into(),
        event_types: event_types.to_vec(),
        group_by_event_type,
    };
    (
        vec![hourly(&[], true), hourly(&[], false), hourly(&filter, false), hourly(&filter, true)],
        vec![
            period(Granularity::Day, &[], true),
            period(Granularity::Week, &[], false),
            period(Granularity::Month, &filter, false),
            period(Granularity::Day, &filter, true),
        ],
    )
}

#[tokio::test]
async fn cached_responses_decode_to_the_uncached_ones_before_and_after_a_new_revision() {
    let platform = support::start("query_encoded_cache").await;
    let cached = platform.service(QueryConfig::with_defaults()).await;
    let uncached = platform.service(QueryConfig { cache_entries: 0, ..QueryConfig::with_defaults() }).await;
    let mut client = platform.client().await;
    let hours = data_hours();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    let (hourly_requests, period_requests) = report_requests(from, to);
    let key = platform.acme_key.as_str();

    // Each request's miss, its hit, the uncached service's response, and the gRPC client's decoding of
    // the served (cached) one: all the same message, and the hit the very bytes the miss encoded.
    let mut hourly_bytes = Vec::new();
    for request in &hourly_requests {
        let miss = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        let hit = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_eq!(hit.as_bytes().as_ptr(), miss.as_bytes().as_ptr(), "answered from the cache: {request:?}");
        let fresh = uncached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        let expected = fresh.to_message().unwrap();
        assert!(!expected.rows.is_empty(), "{request:?}");
        assert_eq!(miss.to_message().unwrap(), expected, "{request:?}");
        assert_eq!(hit.to_message().unwrap(), expected, "{request:?}");
        let served = client.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_eq!(served, expected, "{request:?}");
        hourly_bytes.push(hit.as_bytes().clone());
    }
    for request in &period_requests {
        let miss = cached.get_period_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        let hit = cached.get_period_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_eq!(hit.as_bytes().as_ptr(), miss.as_bytes().as_ptr(), "answered from the cache: {request:?}");
        let fresh = uncached.get_period_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        let expected = fresh.to_message().unwrap();
        assert!(!expected.rows.is_empty(), "{request:?}");
        assert_eq!(hit.to_message().unwrap(), expected, "{request:?}");
        let served = client.get_period_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_eq!(served, expected, "{request:?}");
    }

    // Once the cache's listener is connected, a hit checked against the revision sum is stamped, and
    // used without reading the sum again until an announcement of acme's moves the stamp.
    support::wait_for("the rollup change listener", || cached.report_cache().changes().is_listening()).await;
    for _ in 0..2 {
        for (request, before) in hourly_requests.iter().zip(&hourly_bytes) {
            let hit = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
            assert_eq!(hit.as_bytes().as_ptr(), before.as_ptr(), "answered from the cache: {request:?}");
        }
    }
    let stamp_before = cached.report_cache().stamp("acme");
    assert!(stamp_before.is_some());

    // Late events re-aggregate an hour (a new revision): every entry is stale, the next answer is read
    // and encoded again, equals the uncached one, and is then the one the cache answers with. The
    // completion's announcement is delivered at its commit, not with it: once the listener heard it (or
    // lost its connection, which ends every stamp), no entry of acme's is used unchecked.
    let mut late = support::generate("acme", &hours[1..2], 3);
    for (index, event) in late.iter_mut().enumerate() {
        event.event_id = format!("acme-late-cache-{index}");
    }
    platform.ingest_late("acme", late).await;
    support::wait_for("the announcement of acme's new revision", || {
        cached.report_cache().stamp("acme") != stamp_before
    })
    .await;
    for (request, before) in hourly_requests.iter().zip(&hourly_bytes) {
        let after = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_ne!(after.as_bytes().as_ptr(), before.as_ptr(), "the stale entry was not used: {request:?}");
        let fresh = uncached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        let expected = fresh.to_message().unwrap();
        assert_eq!(after.to_message().unwrap(), expected, "{request:?}");
        let again = cached.get_hourly_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_eq!(again.as_bytes().as_ptr(), after.as_bytes().as_ptr(), "cached again: {request:?}");
        if request.event_types.is_empty() {
            let events: u64 = expected.rows.iter().map(|row| row.events).sum();
            assert_eq!(events, platform.acme_events.len() as u64 + 3, "{request:?}");
        }
    }
    for request in &period_requests {
        let after = cached.get_period_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        let fresh = uncached.get_period_metrics(authorized(key, request.clone())).await.unwrap().into_inner();
        assert_eq!(after.to_message().unwrap(), fresh.to_message().unwrap(), "{request:?}");
    }
    // Another customer's report with the same request is its own entry.
    let globex = cached
        .get_hourly_metrics(authorized(&platform.globex_key, hourly_requests[1].clone()))
        .await
        .unwrap()
        .into_inner()
        .to_message()
        .unwrap();
    assert_eq!(globex.rows.iter().map(|row| row.events).sum::<u64>(), platform.globex_events.len() as u64);
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

#[tokio::test]
async fn raw_events_page_through_an_hour_exactly_once() {
    let platform = support::start("query_raw_pages").await;
    let mut client = platform.client().await;
    let hour = data_hours()[2];
    let expected: BTreeSet<String> = platform
        .acme_events
        .iter()
        .filter(|event| hourglass_core::hour::hour_start(event.occurred_at.as_ref().unwrap().seconds) == hour)
        .map(|event| event.event_id.clone())
        .collect();
    // Pages of one end inside a bucket at almost every event, and resume from the token's event id.
    for page_size in [1, 7] {
        for event_type in ["", "click"] {
            let context = format!("pages of {page_size}, filter {event_type:?}");
            let mut seen = Vec::new();
            let mut page_token = String::new();
            let mut pages = 0;
            loop {
                let page = client
                    .list_raw_events(authorized(
                        &platform.acme_key,
                        ListRawEventsRequest {
                            hour_start: Some(Timestamp { seconds: hour, nanos: 0 }),
                            event_type: event_type.into(),
                            page_size,
                            page_token: page_token.clone(),
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(page.events.len() <= page_size as usize, "{context}");
                pages += 1;
                for raw in page.events.iter() {
                    let event = raw.event.as_ref().unwrap();
                    assert!(event_type.is_empty() || event.event_type == event_type, "{context}");
                    assert!(!raw.batch_id.is_empty());
                    seen.push(event.event_id.clone());
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                assert_eq!(page.events.len(), page_size as usize, "{context}: only the last page is short");
                page_token = page.next_page_token;
            }
            let distinct: BTreeSet<String> = seen.iter().cloned().collect();
            assert_eq!(distinct.len(), seen.len(), "{context}: no event on two pages");
            let wanted: BTreeSet<String> = expected
                .iter()
                .filter(|id| {
                    event_type.is_empty()
                        || platform
                            .acme_events
                            .iter()
                            .any(|event| &event.event_id == *id && event.event_type == event_type)
                })
                .cloned()
                .collect();
            assert_eq!(distinct, wanted, "{context}");
            // The test store has 4 buckets: events come bucket by bucket, by id within each.
            let place = |event_id: &String| (hourglass_core::raw_store::bucket_of(event_id, 4), event_id.clone());
            let mut in_store_order = seen.clone();
            in_store_order.sort_by_key(place);
            assert_eq!(seen, in_store_order, "{context}: bucket by bucket, ids ascending");
            assert!(pages > 2, "{context}: small pages take several calls");
            let mid_bucket_page_ends = seen.windows(2).filter(|pair| place(&pair[0]).0 == place(&pair[1]).0).count();
            if page_size == 1 {
                assert!(mid_bucket_page_ends > 20, "{context}: {mid_bucket_page_ends} pages ended inside a bucket");
            }
        }
    }
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

#[tokio::test]
async fn hour_status_and_the_ledger_show_the_erasures_applied_to_each_hour() {
    use hourglass_core::customer::CustomerId;
    use hourglass_core::erasure::{ErasureHour, ErasureSalt, ErasureStore, UserHash};
    use hourglass_core::job_queue::CustomerHour;
    use hourglass_postgres::{PostgresConfig, PostgresErasureStore};

    let platform = support::start("query_erasures").await;
    let mut client = platform.client().await;
    let hours = data_hours();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);
    // The erasure as its run records it (the run itself is tested in crates/aggregator/tests/erasure.rs).
    let pool = PostgresConfig::for_url(platform.database_url.clone()).open().await.unwrap();
    let erasures = PostgresErasureStore::new(pool);
    let acme = CustomerId::new("acme").unwrap();
    let salt = ErasureSalt::new("the query tests' erasure salt").unwrap();
    let until = chrono::Utc::now() + chrono::TimeDelta::days(30);
    let request = erasures.request_erasure(&acme, UserHash::of(&salt, "acme", "user-5"), until).await.unwrap();
    let lease = erasures.lease_erasure(&request.id, "test", std::time::Duration::from_secs(60)).await.unwrap().unwrap();
    let planned = |hour_start, events| ErasureHour {
        customer_hour: CustomerHour { customer_id: acme.clone(), hour_start },
        events,
        revision: None,
    };
    assert!(erasures.plan_erasure(&lease, &[planned(hours[1], 3), planned(hours[3], 2)]).await.unwrap());
    assert!(erasures.record_erased_hour(&lease, &planned(hours[1], 3).customer_hour, 2).await.unwrap());

    let statuses = client
        .get_hour_status(authorized(&platform.acme_key, GetHourStatusRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .hours;
    // Per erasure: request id, events erased, revision, whether it has its instant.
    type Shown = Vec<(String, u64, u32, bool)>;
    let shown = |erasures: &[hourglass_proto::v1::AppliedErasure]| -> Shown {
        erasures
            .iter()
            .map(|applied| {
                (applied.request_id.clone(), applied.events_erased, applied.revision, applied.erased_at.is_some())
            })
            .collect()
    };
    let by_hour: Vec<(i64, Shown)> =
        statuses.iter().map(|status| (status.hour_start.as_ref().unwrap().seconds, shown(&status.erasures))).collect();
    let expected = vec![
        (hours[0], vec![]),
        (hours[1], vec![(request.id.clone(), 3, 2, true)]),
        (hours[2], vec![]),
        (hours[3], vec![(request.id.clone(), 2, 0, false)]),
        (hours[4], vec![]),
    ];
    assert_eq!(by_hour, expected, "done: its revision and instant; planned: neither yet");

    let ledger = client
        .get_ledger(authorized(&platform.acme_key, GetLedgerRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .rows;
    let by_hour: Vec<(i64, Shown)> =
        ledger.iter().map(|row| (row.hour_start.as_ref().unwrap().seconds, shown(&row.erasures))).collect();
    assert_eq!(by_hour, expected, "the ledger shows the same erasures");
    assert!(ledger.iter().all(|row| row.erased == 0), "nothing was suppressed at ingestion");

    let globex = client
        .get_hour_status(authorized(&platform.globex_key, GetHourStatusRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .hours;
    assert!(globex.iter().all(|status| status.erasures.is_empty()), "another customer's erasures are not shown");
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

#[tokio::test]
async fn a_key_reads_only_its_own_customer() {
    let platform = support::start("query_tenants").await;
    let mut client = platform.client().await;
    let hours = data_hours();
    let (from, to) = (hours[0], hours[hours.len() - 1] + 3600);

    let globex_rows = client
        .get_hourly_metrics(authorized(
            &platform.globex_key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: vec![], group_by_event_type: true },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(!globex_rows.is_empty());
    assert!(globex_rows.iter().all(|row| row.event_type == "globex_secret"));
    let globex_total: u64 = globex_rows.iter().map(|row| row.events).sum();
    assert_eq!(globex_total, platform.globex_events.len() as u64);

    // acme asking for globex's event type by name gets nothing, in every report.
    let secret = vec!["globex_secret".to_owned()];
    let acme_rows = client
        .get_hourly_metrics(authorized(
            &platform.acme_key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: secret.clone(), group_by_event_type: true },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(acme_rows.is_empty());
    let acme_periods = client
        .get_period_metrics(authorized(
            &platform.acme_key,
            GetPeriodMetricsRequest {
                range: range(from, to),
                granularity: Granularity::Day.into(),
                event_types: secret,
                group_by_event_type: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(acme_periods.is_empty());
    let types = client
        .list_event_types(authorized(&platform.acme_key, ListEventTypesRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert!(types.iter().all(|summary| summary.event_type != "globex_secret"));
    let ledger = client
        .get_ledger(authorized(&platform.globex_key, GetLedgerRequest { range: range(from, to) }))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(ledger.iter().map(|row| row.accepted).sum::<u64>(), platform.globex_events.len() as u64);

    // globex's raw events are not reachable with acme's key, nor acme's page tokens with globex's key.
    let raw = |key: &str, page_token: String| {
        authorized(
            key,
            ListRawEventsRequest {
                hour_start: Some(Timestamp { seconds: hours[0], nanos: 0 }),
                event_type: String::new(),
                page_size: 5,
                page_token,
            },
        )
    };
    let acme_page = client.list_raw_events(raw(&platform.acme_key, String::new())).await.unwrap().into_inner();
    assert!(acme_page.events.iter().all(|raw| raw.event.as_ref().unwrap().event_id.starts_with("acme-")));
    let stolen = client.list_raw_events(raw(&platform.globex_key, acme_page.next_page_token)).await.unwrap_err();
    assert_eq!(stolen.code(), Code::InvalidArgument);
    assert!(stolen.message().contains("different query"), "{}", stolen.message());

    // Keys that are not query keys of a customer get nothing at all.
    let hourly = |key: &str| {
        authorized(
            key,
            GetHourlyMetricsRequest { range: range(from, to), event_types: vec![], group_by_event_type: true },
        )
    };
    let wrong_scope = client.get_hourly_metrics(hourly(&platform.acme_ingest_key)).await.unwrap_err();
    assert_eq!(wrong_scope.code(), Code::PermissionDenied);
    let no_key = client
        .get_hourly_metrics(tonic::Request::new(GetHourlyMetricsRequest {
            range: range(from, to),
            event_types: vec![],
            group_by_event_type: true,
        }))
        .await
        .unwrap_err();
    assert_eq!(no_key.code(), Code::Unauthenticated);
    let forged = client.get_hourly_metrics(hourly("hgk_AAAAAAAA_not-a-real-key")).await.unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}

#[tokio::test]
async fn bad_ranges_sizes_and_page_tokens_are_invalid_arguments_that_say_why() {
    let platform = support::start("query_bad_requests").await;
    let mut client = platform.client().await;
    let hour = data_hours()[0];
    let hourly = |range: Option<TimeRange>| {
        authorized(
            &platform.acme_key,
            GetHourlyMetricsRequest { range, event_types: vec![], group_by_event_type: true },
        )
    };
    let cases = [
        (None, "range: is required"),
        (range(hour + 1800, hour + 7200), "not on a whole hour"),
        (range(hour, hour), "end must be after start"),
        (range(hour, hour + 3600 * 3000), "at most 2232 are allowed (--query-max-hourly-range-hours)"),
    ];
    for (range, message) in cases {
        let status = client.get_hourly_metrics(hourly(range)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(message), "{:?} lacks {message:?}", status.message());
    }
    let no_granularity = client
        .get_period_metrics(authorized(
            &platform.acme_key,
            GetPeriodMetricsRequest {
                range: range(hour, hour + 3600),
                granularity: Granularity::Unspecified.into(),
                event_types: vec![],
                group_by_event_type: false,
            },
        ))
        .await
        .unwrap_err();
    assert!(no_granularity.message().contains("granularity: is required"));

    let raw = |page_size: u32, page_token: &str| {
        authorized(
            &platform.acme_key,
            ListRawEventsRequest {
                hour_start: Some(Timestamp { seconds: hour, nanos: 0 }),
                event_type: String::new(),
                page_size,
                page_token: page_token.into(),
            },
        )
    };
    let too_big = client.list_raw_events(raw(5000, "")).await.unwrap_err();
    assert!(too_big.message().contains("above the limit of 1000 (--query-max-page-size)"), "{}", too_big.message());
    let page = client.list_raw_events(raw(3, "")).await.unwrap().into_inner();
    let mut tampered = page.next_page_token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    for token in [String::from_utf8(tampered).unwrap(), "not a token".to_owned()] {
        let status = client.list_raw_events(raw(3, &token)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_token is invalid"), "{}", status.message());
    }
    // The same token with another hour is another query.
    let other_hour = client
        .list_raw_events(authorized(
            &platform.acme_key,
            ListRawEventsRequest {
                hour_start: Some(Timestamp { seconds: hour + 3600, nanos: 0 }),
                event_type: String::new(),
                page_size: 3,
                page_token: page.next_page_token.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert!(other_hour.message().contains("different query"));
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}
