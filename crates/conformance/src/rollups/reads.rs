//! What the reader returns, per customer, and the ledger.

use std::collections::BTreeSet;

use hourglass_proto::v1::RejectionReason;

use super::*;

/// A rejection reason no build knows yet (a newer collector's): stores keep its count under its number.
const FUTURE_REASON: i32 = 1000;

/// The reader: [from, to) bounds, ordering, event type filters, numeric rows, event type totals, hour
/// statuses (also of hours never aggregated, and of hours whose rollup has no rows), the ledger.
pub async fn reader(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "reader-acme";
    let hour_rollups = [
        (
            hour(0),
            rollup(
                true,
                &[("buy", 3), ("view", 10)],
                &[("buy", "price", 3, 30.0, 5.0, 15.0), ("view", "duration", 10, 12.5, 0.5, 4.0)],
                outcomes(13, &[], 0),
            ),
        ),
        (
            hour(1),
            rollup(
                true,
                &[("click", 4), ("view", 7)],
                &[("view", "depth", 7, 21.0, 1.0, 6.0), ("view", "duration", 7, 3.5, 0.25, 1.0)],
                outcomes(
                    11,
                    &[(RejectionReason::EventTypeEmpty as i32, 2), (RejectionReason::PropertyNameInvalid as i32, 3)],
                    1,
                ),
            ),
        ),
        (hour(2), rollup(true, &[("buy", 1)], &[("buy", "price", 1, 9.75, 9.75, 9.75)], outcomes(1, &[], 0))),
        // Only rejected events: an hour with a revision and a ledger row but no rollup rows.
        (
            hour(4),
            rollup(true, &[], &[], outcomes(0, &[(RejectionReason::EventIdEmpty as i32, 5), (FUTURE_REASON, 2)], 0)),
        ),
    ];
    let marked: Vec<CustomerHour> = hour_rollups.iter().map(|(start, _)| customer_hour(ACME, *start)).collect();
    mark(jobs, &marked).await;
    let leased = lease(rollups, "worker-a", 10, LONG_LEASE, final_before(10)).await;
    assert_eq!(leased.len(), hour_rollups.len(), "every marked closed hour is a job");
    for job in &leased {
        let (_, hour_rollup) = hour_rollups
            .iter()
            .find(|(start, _)| *start == job.customer_hour.hour_start)
            .unwrap_or_else(|| panic!("leased an hour never marked: {:?}", job.customer_hour));
        complete_expecting(rollups, job, hour_rollup, 1, "first rollup").await;
    }
    // Hour 3 received data but was never aggregated.
    mark(jobs, &[customer_hour(ACME, hour(3))]).await;

    let all_rows: Vec<HourlyRollupRow> =
        hour_rollups.iter().flat_map(|(start, hour_rollup)| expected_rows(*start, hour_rollup, true)).collect();
    assert_eq!(rows(rollups, ACME, hour(0), hour(5), &[]).await, all_rows, "every row, by hour then event type");
    let only_hour_1: Vec<_> = all_rows.iter().filter(|row| row.hour_start == hour(1)).cloned().collect();
    assert_eq!(rows(rollups, ACME, hour(1), hour(2), &[]).await, only_hour_1, "from is inclusive, to exclusive");
    assert!(rows(rollups, ACME, hour(0), hour(0), &[]).await.is_empty(), "an empty range has no rows");
    let views: Vec<_> = all_rows.iter().filter(|row| row.event_type == "view").cloned().collect();
    assert_eq!(rows(rollups, ACME, hour(0), hour(5), &["view"]).await, views, "filtered by event type");
    let buys_and_clicks: Vec<_> = all_rows.iter().filter(|row| row.event_type != "view").cloned().collect();
    assert_eq!(rows(rollups, ACME, hour(0), hour(5), &["click", "buy"]).await, buys_and_clicks, "by several types");
    assert!(rows(rollups, ACME, hour(0), hour(5), &["unseen"]).await.is_empty(), "a type never seen has no rows");
    let all_totals: Vec<HourlyTotalsRow> =
        hour_rollups.iter().flat_map(|(start, hour_rollup)| expected_totals(*start, hour_rollup, true)).collect();
    let totals = rollups.hourly_totals(ACME, hour(0), hour(5), true).await.expect("hourly totals");
    assert_eq!(totals, all_totals, "one totals row per hour with events, oldest first");
    let hour_1_totals = rollups.hourly_totals(ACME, hour(1), hour(2), false).await.expect("hourly totals");
    assert_eq!(hour_1_totals.len(), all_totals.iter().filter(|row| row.hour_start == hour(1)).count(), "[from, to)");

    let all_numeric: Vec<HourlyNumericRow> =
        hour_rollups.iter().flat_map(|(start, hour_rollup)| expected_numeric(*start, hour_rollup)).collect();
    assert_eq!(numeric(rollups, ACME, hour(0), hour(5), &[]).await, all_numeric, "by hour, event type, property");
    let numeric_views: Vec<_> = all_numeric.iter().filter(|row| row.event_type == "view").cloned().collect();
    assert_eq!(numeric(rollups, ACME, hour(0), hour(5), &["view"]).await, numeric_views, "filtered by event type");
    let numeric_from_1: Vec<_> = all_numeric.iter().filter(|row| row.hour_start >= hour(1)).cloned().collect();
    assert_eq!(numeric(rollups, ACME, hour(1), hour(5), &[]).await, numeric_from_1, "bounded by hour");

    let seen = |event_type: &str, events, first: i64, last: i64| EventTypeSeen {
        event_type: event_type.into(),
        events,
        first_hour: hour(first),
        last_hour: hour(last),
    };
    let types = rollups.event_types(ACME, hour(0), hour(5)).await.expect("event types");
    assert_eq!(types, [seen("buy", 4, 0, 2), seen("click", 4, 1, 1), seen("view", 17, 0, 1)], "totals by type");
    let later_types = rollups.event_types(ACME, hour(1), hour(2)).await.expect("event types");
    assert_eq!(later_types, [seen("click", 4, 1, 1), seen("view", 7, 1, 1)], "totals within the range");

    let all_statuses = statuses(rollups, ACME, hour(0), hour(5)).await;
    let starts: Vec<i64> = all_statuses.iter().map(|status| status.hour_start).collect();
    assert_eq!(starts, [hour(0), hour(1), hour(2), hour(3), hour(4)], "every hour with data, oldest first");
    for aggregated in [&all_statuses[0], &all_statuses[1], &all_statuses[2], &all_statuses[4]] {
        assert_eq!((aggregated.revision, aggregated.logic_version), (Some(1), Some(LOGIC_VERSION)));
        assert!(aggregated.is_final && aggregated.final_as_of.is_some() && aggregated.computed_at.is_some());
        assert!(!aggregated.pending, "{aggregated:?} is aggregated as of its last mark");
    }
    let events: Vec<u64> = all_statuses.iter().map(|status| status.events).collect();
    assert_eq!(events, [13, 11, 1, 0, 0], "each status carries its rollup's events");
    let never_aggregated = HourStatus {
        hour_start: hour(3),
        revision: None,
        logic_version: None,
        is_final: false,
        final_as_of: None,
        computed_at: None,
        events: 0,
        pending: true,
        refused: None,
    };
    assert_eq!(all_statuses[3], never_aggregated, "an hour marked but never aggregated is pending, with no revision");
    assert_eq!(statuses(rollups, ACME, hour(1), hour(3)).await, all_statuses[1..3], "statuses are bounded [from, to)");

    let rows_of_ledger = ledger(rollups, Some(ACME), hour(0), hour(5)).await;
    let ledger_hours: Vec<i64> = rows_of_ledger.iter().map(|row| row.customer_hour.hour_start).collect();
    assert_eq!(ledger_hours, [hour(0), hour(1), hour(2), hour(4)], "a ledger row per aggregated hour, oldest first");
    let second = &rows_of_ledger[1];
    assert_eq!(
        (second.received, second.accepted, second.rejected, second.throttled, second.stored, second.counted),
        (17, 11, 5, 1, 11, 11),
        "the ledger carries the outcomes and the counted events"
    );
    let second_reasons =
        BTreeMap::from([(RejectionReason::EventTypeEmpty as i32, 2), (RejectionReason::PropertyNameInvalid as i32, 3)]);
    assert_eq!(second.rejected_by_reason, second_reasons, "the ledger carries the rejections by reason");
    let rejected_only = &rows_of_ledger[3];
    assert_eq!((rejected_only.received, rejected_only.rejected, rejected_only.counted), (7, 7, 0));
    let rejected_only_reasons = BTreeMap::from([(RejectionReason::EventIdEmpty as i32, 5), (FUTURE_REASON, 2)]);
    assert_eq!(
        rejected_only.rejected_by_reason, rejected_only_reasons,
        "a reason this build does not know keeps its count"
    );
    assert!(rows_of_ledger[0].rejected_by_reason.is_empty(), "an hour without rejections has no reasons");
    for row in &rows_of_ledger {
        assert_eq!(row.rejected_by_reason.values().sum::<u64>(), row.rejected, "the reasons sum to rejected: {row:?}");
    }
    assert!(rows_of_ledger.iter().all(|row| row.is_final && row.balances()));
}

/// Every reader method, asked for one customer, returns that customer's rows and never another's.
pub async fn customer_isolation(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "isolation-acme";
    const GLOBEX: &str = "isolation-globex";
    const NOBODY: &str = "isolation-nobody";
    let acme_rollup = |scale: u64| {
        rollup(true, &[("view", scale)], &[("view", "price", scale, 1.5, 0.5, 1.0)], outcomes(scale, &[], 0))
    };
    let globex_rollup = |scale: u64| {
        rollup(
            true,
            &[("refund", 1), ("view", 100 + scale)],
            &[("view", "price", 100 + scale, 99.0, 9.0, 90.0)],
            outcomes(101 + scale, &[(2, 1)], 3),
        )
    };
    let mut expected: BTreeMap<(&str, i64), HourRollup> = BTreeMap::new();
    expected.insert((ACME, hour(0)), acme_rollup(1));
    expected.insert((ACME, hour(1)), acme_rollup(2));
    expected.insert((GLOBEX, hour(0)), globex_rollup(1));
    expected.insert((GLOBEX, hour(1)), globex_rollup(2));
    expected.insert((GLOBEX, hour(2)), globex_rollup(3));
    let marked: Vec<CustomerHour> = expected.keys().map(|(customer, start)| customer_hour(customer, *start)).collect();
    mark(jobs, &marked).await;
    for job in lease(rollups, "worker-a", 10, LONG_LEASE, final_before(10)).await {
        let key = (job.customer_hour.customer_id.as_str(), job.customer_hour.hour_start);
        let hour_rollup = expected.get(&key).unwrap_or_else(|| panic!("leased an hour never marked: {key:?}"));
        complete_expecting(rollups, &job, hour_rollup, 1, "first rollup").await;
    }

    for customer in [ACME, GLOBEX] {
        let own: Vec<(i64, &HourRollup)> = expected
            .iter()
            .filter(|((owner, _), _)| *owner == customer)
            .map(|((_, start), hour_rollup)| (*start, hour_rollup))
            .collect();
        let own_rows: Vec<_> =
            own.iter().flat_map(|(start, hour_rollup)| expected_rows(*start, hour_rollup, true)).collect();
        assert_eq!(
            rows(rollups, customer, hour(0), hour(5), &[]).await,
            own_rows,
            "{customer}'s rows and no one else's"
        );
        assert_eq!(rows(rollups, customer, hour(0), hour(5), &["view"]).await.len(), own.len(), "{customer}'s views");
        let own_totals: Vec<_> =
            own.iter().flat_map(|(start, hour_rollup)| expected_totals(*start, hour_rollup, true)).collect();
        let totals = rollups.hourly_totals(customer, hour(0), hour(5), true).await.expect("hourly totals");
        assert_eq!(totals, own_totals, "{customer}'s totals and no one else's");
        let own_numeric: Vec<_> =
            own.iter().flat_map(|(start, hour_rollup)| expected_numeric(*start, hour_rollup)).collect();
        assert_eq!(numeric(rollups, customer, hour(0), hour(5), &[]).await, own_numeric, "{customer}'s numeric rows");
        let own_types: BTreeSet<&str> = own
            .iter()
            .flat_map(|(_, hour_rollup)| &hour_rollup.event_types)
            .map(|row| row.event_type.as_str())
            .collect();
        let types = rollups.event_types(customer, hour(0), hour(5)).await.expect("event types");
        let type_names: BTreeSet<&str> = types.iter().map(|seen| seen.event_type.as_str()).collect();
        assert_eq!(type_names, own_types, "{customer}'s event types only");
        let view_total: u64 = own
            .iter()
            .map(|(_, hour_rollup)| {
                hour_rollup.event_types.iter().find(|row| row.event_type == "view").map_or(0, |row| row.events)
            })
            .sum();
        let views = types.iter().find(|seen| seen.event_type == "view").expect("both customers have views");
        assert_eq!(views.events, view_total, "{customer}'s view total counts only their events");
        let own_hours: Vec<i64> = own.iter().map(|(start, _)| *start).collect();
        let status_rows = statuses(rollups, customer, hour(0), hour(5)).await;
        let status_hours: Vec<i64> = status_rows.iter().map(|status| status.hour_start).collect();
        assert_eq!(status_hours, own_hours, "{customer}'s hour statuses only");
        let status_events: Vec<u64> = status_rows.iter().map(|status| status.events).collect();
        let own_events: Vec<u64> = own.iter().map(|(_, hour_rollup)| hour_rollup.events).collect();
        assert_eq!(status_events, own_events, "{customer}'s statuses count their events");
        let ledger_rows = ledger(rollups, Some(customer), hour(0), hour(5)).await;
        assert!(
            ledger_rows.iter().all(|row| row.customer_hour.customer_id.as_str() == customer),
            "{customer}'s ledger"
        );
        let ledger_counts: Vec<u64> = ledger_rows.iter().map(|row| row.counted).collect();
        assert_eq!(ledger_counts, own_events, "{customer}'s ledger rows, one per hour");
        let with_data = rollups.hours_with_data(Some(customer), hour(0), hour(5)).await.expect("hours with data");
        let expected_with_data: Vec<CustomerHour> =
            own_hours.iter().map(|start| customer_hour(customer, *start)).collect();
        assert_eq!(with_data, expected_with_data, "{customer}'s hours with data");
        let current = rollups.current_rollup(&customer_hour(customer, hour(0))).await.expect("current rollup");
        assert_eq!(&current, &own[0].1.event_types, "{customer}'s current rollup");
    }

    assert!(rows(rollups, NOBODY, hour(0), hour(5), &[]).await.is_empty(), "a customer without data has no rows");
    assert!(numeric(rollups, NOBODY, hour(0), hour(5), &[]).await.is_empty());
    assert!(rollups.event_types(NOBODY, hour(0), hour(5)).await.expect("event types").is_empty());
    assert!(statuses(rollups, NOBODY, hour(0), hour(5)).await.is_empty());
    assert!(ledger(rollups, Some(NOBODY), hour(0), hour(5)).await.is_empty());
    assert!(rollups.current_rollup(&customer_hour(NOBODY, hour(0))).await.expect("current rollup").is_empty());
}

/// The ledger of all customers and of one, recounts, hours with data and the oldest unfinalized hour.
pub async fn ledger_and_recount(jobs: &impl JobQueue, rollups: &(impl RollupStore + RollupReader)) {
    const ACME: &str = "ledger-acme";
    const GLOBEX: &str = "ledger-globex";
    assert_eq!(oldest_unfinalized(rollups).await, None, "an empty store has no hour waiting");
    mark(jobs, &[customer_hour(ACME, hour(1))]).await;
    mark(jobs, &[customer_hour(GLOBEX, hour(0)), customer_hour(ACME, hour(0))]).await;

    let every_hour = rollups.hours_with_data(None, hour(0), hour(2)).await.expect("hours with data");
    let expected_hours = [customer_hour(ACME, hour(0)), customer_hour(GLOBEX, hour(0)), customer_hour(ACME, hour(1))];
    assert_eq!(every_hour, expected_hours, "every customer's hours, by hour then customer");
    let acme_hours = rollups.hours_with_data(Some(ACME), hour(0), hour(2)).await.expect("hours with data");
    assert_eq!(acme_hours, [customer_hour(ACME, hour(0)), customer_hour(ACME, hour(1))], "one customer's hours");
    let first_hour = rollups.hours_with_data(None, hour(0), hour(1)).await.expect("hours with data");
    assert_eq!(first_hour, expected_hours[..2], "hours with data are bounded [from, to)");
    assert_eq!(oldest_unfinalized(rollups).await, Some(hour(0)));

    let seen = outcomes(12, &[(1, 2), (3, 1)], 4);
    let leased = lease(rollups, "worker-a", 10, LONG_LEASE, final_before(1)).await;
    assert_eq!(leased.len(), 2, "both customers' closed hours are jobs");
    for job in &leased {
        let events = if job.customer_hour.customer_id.as_str() == ACME { 10 } else { 5 };
        let hour_rollup = rollup(true, &[("view", events)], &[], seen.clone());
        complete_expecting(rollups, job, &hour_rollup, 1, "first rollup").await;
    }
    let open = lease(rollups, "worker-a", 10, LONG_LEASE, provisional_from(1, Duration::ZERO)).await;
    assert_eq!(open.len(), 1, "the open hour is a provisional job");
    complete_expecting(rollups, &open[0], &rollup(false, &[("view", 7)], &[], seen.clone()), 1, "provisional").await;
    assert_eq!(oldest_unfinalized(rollups).await, Some(hour(1)), "a provisional rollup leaves its hour unfinalized");

    let ledger_row = |customer: &str, hour_start: i64, events: u64, is_final: bool| LedgerRow {
        customer_hour: customer_hour(customer, hour_start),
        received: 19,
        accepted: 12,
        rejected: 3,
        rejected_by_reason: BTreeMap::from([(1, 2), (3, 1)]),
        throttled: 4,
        erased: 1,
        plan_checks: BTreeMap::from([(
            PlanCheckKey { plan_version: 1, event_type: String::new(), rule: 0, rejected: false },
            12,
        )]),
        stored: events,
        counted: events,
        is_final,
    };
    let everyone = ledger(rollups, None, hour(0), hour(2)).await;
    let expected_ledger = [
        ledger_row(ACME, hour(0), 10, true),
        ledger_row(GLOBEX, hour(0), 5, true),
        ledger_row(ACME, hour(1), 7, false),
    ];
    assert_eq!(everyone, expected_ledger, "the operators' ledger: every customer, by hour then customer");
    assert!(everyone.iter().all(LedgerRow::balances), "a completion stores stored = counted");
    assert_eq!(ledger(rollups, Some(GLOBEX), hour(0), hour(2)).await, [expected_ledger[1].clone()], "one customer");
    assert_eq!(ledger(rollups, None, hour(1), hour(2)).await, [expected_ledger[2].clone()], "bounded [from, to)");

    let recounted = rollups.record_recount(&customer_hour(ACME, hour(0)), 9).await.expect("record a recount");
    let mismatch = LedgerRow { stored: 9, ..expected_ledger[0].clone() };
    assert_eq!(recounted, Some(mismatch.clone()), "a recount changes stored and returns the row");
    assert!(!mismatch.balances());
    assert_eq!(ledger(rollups, Some(ACME), hour(0), hour(1)).await, [mismatch], "the ledger shows the recount");
    let globex_after = ledger(rollups, Some(GLOBEX), hour(0), hour(1)).await;
    assert_eq!(globex_after, [expected_ledger[1].clone()], "a recount touches one customer-hour only");
    let never = rollups.record_recount(&customer_hour(ACME, hour(7)), 1).await.expect("record a recount");
    assert_eq!(never, None, "an hour never aggregated has no ledger row to recount");

    // A new rollup counts again: stored and counted agree once more.
    mark(jobs, &[customer_hour(ACME, hour(0))]).await;
    let again = lease(rollups, "worker-b", 10, LONG_LEASE, final_before(1)).await;
    assert_eq!(again.len(), 1);
    complete_expecting(rollups, &again[0], &rollup(true, &[("view", 11)], &[], seen), 2, "re-aggregated").await;
    let rebalanced = ledger(rollups, Some(ACME), hour(0), hour(1)).await;
    assert_eq!(rebalanced, [ledger_row(ACME, hour(0), 11, true)], "the new completion replaces the ledger row");
}
