//! Tracking plans at a running collector against the real Kafka broker and Postgres (tier b): enforce
//! mode rejects exactly the violating events of a mixed batch, with the rule's reason, its index and a
//! message naming the plan version; warn mode accepts them all and counts the violations in the record;
//! a new version takes effect within the plan-cache TTL without a restart.

mod support;

use std::time::{Duration, Instant};

use hourglass_core::api_key::{ApiKey, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::PlanDocument;
use hourglass_core::tracking_plan::store::PlanStore;
use hourglass_proto::log::v1::{Outcome, PlanCheckCount};
use hourglass_proto::v1::{BatchAck, Event, IngestBatchRequest, PropertyValue, RejectionReason, property_value};
use support::{TestCollector, authorized, event, events_by_id, outcome_total};

const PLAN: &str = r#"{
    "mode": "enforce",
    "undeclared_event_types": "reject",
    "undeclared_properties": "warn",
    "event_types": {
        "page_view": {"properties": {
            "path": {"type": "string", "required": true, "pattern": "^/"},
            "amount": {"type": "number", "minimum": 0},
            "first": {"type": "bool"}
        }}
    }
}"#;

fn with_property(mut event: Event, name: &str, kind: property_value::Kind) -> Event {
    event.properties.insert(name.to_owned(), PropertyValue { kind: Some(kind) });
    event
}

/// A batch of eight: events 1, 3, 4 and 6 break a declared rule, 5 has an undeclared property (a
/// warning), the others follow the plan.
fn mixed_batch(prefix: &str) -> Vec<Event> {
    use property_value::Kind;
    let id = |index: usize| format!("{prefix}-{index}");
    let mut missing_path = event(&id(4));
    missing_path.properties.remove("path");
    vec![
        event(&id(0)),
        with_property(event(&id(1)), "amount", Kind::StringValue("12".into())),
        event(&id(2)),
        Event { event_type: "checkout".into(), ..event(&id(3)) },
        missing_path,
        with_property(event(&id(5)), "coupon", Kind::StringValue("X".into())),
        with_property(event(&id(6)), "amount", Kind::NumberValue(-1.0)),
        event(&id(7)),
    ]
}

async fn push(collector: &TestCollector, customer: &str, json: &str) -> u32 {
    let document = PlanDocument::parse(json).unwrap();
    collector.plan_store.push_plan(&CustomerId::new(customer).unwrap(), &document).await.unwrap().version()
}

async fn send(collector: &TestCollector, key: &ApiKey, events: Vec<Event>) -> BatchAck {
    let mut client = collector.client().await;
    client
        .ingest_batch(authorized(IngestBatchRequest { events }, key))
        .await
        .expect("batch accepted")
        .into_inner()
        .ack
        .unwrap()
}

/// The plan rows of every record: (event type, rule, rejected) → count, and the events checked.
fn plan_counts(checks: &[PlanCheckCount]) -> (Vec<(String, RejectionReason, bool, u32)>, u32) {
    let mut violations: Vec<(String, RejectionReason, bool, u32)> = checks
        .iter()
        .filter(|count| count.rule != RejectionReason::Unspecified as i32)
        .map(|count| (count.event_type.clone(), count.rule(), count.rejected, count.count))
        .collect();
    violations.sort_by_key(|(event_type, rule, rejected, _)| (event_type.clone(), *rule as i32, *rejected));
    let checked =
        checks.iter().filter(|count| count.rule == RejectionReason::Unspecified as i32).map(|count| count.count).sum();
    (violations, checked)
}

#[tokio::test]
async fn enforce_mode_rejects_exactly_the_violating_events_with_their_rule_and_index() {
    let collector = TestCollector::start("plans_enforce").await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    assert_eq!(push(&collector, "acme", PLAN).await, 1);

    let ack = send(&collector, &key, mixed_batch("e")).await;
    let rejections: Vec<(u32, RejectionReason, &str)> = ack
        .rejections
        .iter()
        .map(|rejection| (rejection.index, rejection.reason(), rejection.message.as_str()))
        .collect();
    assert_eq!(
        rejections,
        [
            (1, RejectionReason::PropertyTypeMismatch, "PROPERTY_TYPE_MISMATCH: amount is string, plan v1 says number"),
            (
                3,
                RejectionReason::EventTypeUndeclared,
                "EVENT_TYPE_UNDECLARED: event type \"checkout\" is not in plan v1"
            ),
            (
                4,
                RejectionReason::PropertyRequiredMissing,
                "PROPERTY_REQUIRED_MISSING: path is missing, plan v1 requires it"
            ),
            (6, RejectionReason::PropertyOutOfRange, "PROPERTY_OUT_OF_RANGE: amount is -1, plan v1 says at least 0"),
        ]
    );
    assert_eq!(ack.accepted_count, 4);

    let records = collector.published_records().await;
    let stored = events_by_id(&records);
    let mut stored_ids: Vec<&str> = stored.keys().map(String::as_str).collect();
    stored_ids.sort_unstable();
    assert_eq!(stored_ids, ["e-0", "e-2", "e-5", "e-7"], "only the events the plan let through are published");
    assert_eq!(outcome_total(&records, Outcome::Rejected), 4);
    let checks: Vec<PlanCheckCount> =
        records.iter().flat_map(|published| published.record.plan_checks.clone()).collect();
    assert!(checks.iter().all(|count| count.plan_version == 1), "{checks:?}");
    let (violations, checked) = plan_counts(&checks);
    assert_eq!(checked, 8, "every event that passed the field checks was checked");
    assert_eq!(
        violations,
        [
            ("checkout".to_owned(), RejectionReason::EventTypeUndeclared, true, 1),
            ("page_view".to_owned(), RejectionReason::PropertyUndeclared, false, 1),
            ("page_view".to_owned(), RejectionReason::PropertyRequiredMissing, true, 1),
            ("page_view".to_owned(), RejectionReason::PropertyTypeMismatch, true, 1),
            ("page_view".to_owned(), RejectionReason::PropertyOutOfRange, true, 1),
        ]
    );
    collector.stop().await;
}

#[tokio::test]
async fn warn_mode_accepts_every_event_and_counts_the_violations() {
    let collector = TestCollector::start("plans_warn").await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    push(&collector, "acme", &PLAN.replace(r#""mode": "enforce""#, r#""mode": "warn""#)).await;

    let ack = send(&collector, &key, mixed_batch("w")).await;
    assert!(ack.rejections.is_empty(), "{ack:?}");
    assert_eq!(ack.accepted_count, 8);

    let records = collector.published_records().await;
    assert_eq!(events_by_id(&records).len(), 8);
    let checks: Vec<PlanCheckCount> =
        records.iter().flat_map(|published| published.record.plan_checks.clone()).collect();
    let (violations, checked) = plan_counts(&checks);
    assert_eq!(checked, 8);
    assert_eq!(
        violations,
        [
            ("checkout".to_owned(), RejectionReason::EventTypeUndeclared, false, 1),
            ("page_view".to_owned(), RejectionReason::PropertyUndeclared, false, 1),
            ("page_view".to_owned(), RejectionReason::PropertyRequiredMissing, false, 1),
            ("page_view".to_owned(), RejectionReason::PropertyTypeMismatch, false, 1),
            ("page_view".to_owned(), RejectionReason::PropertyOutOfRange, false, 1),
        ]
    );
    collector.stop().await;
}

#[tokio::test]
async fn a_new_plan_version_takes_effect_within_the_cache_ttl_without_a_restart() {
    let collector = TestCollector::start_with("plans_versions", &support::test_brokers(), |config| {
        config.plan_cache.plan_cache_ttl_secs = 1;
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;
    let checkout = |id: &str| Event { event_type: "checkout".into(), ..event(id) };

    // No plan: anything goes.
    assert!(send(&collector, &key, vec![checkout("before")]).await.rejections.is_empty());
    push(&collector, "acme", PLAN).await;
    let rejected = wait_for_ack(&collector, &key, &checkout, |ack| !ack.rejections.is_empty()).await;
    assert_eq!(rejected.rejections[0].reason(), RejectionReason::EventTypeUndeclared);
    assert!(rejected.rejections[0].message.contains("plan v1"), "{rejected:?}");

    let declaring_checkout = PLAN.replace(r#""page_view": {"#, r#""checkout": {}, "page_view": {"#);
    assert_eq!(push(&collector, "acme", &declaring_checkout).await, 2);
    wait_for_ack(&collector, &key, &checkout, |ack| ack.rejections.is_empty() && ack.accepted_count == 1).await;
    collector.stop().await;
}

/// Sends one-event batches until an ack satisfies `done`; the cache's TTL is 1 s, so a minute is ample.
async fn wait_for_ack(
    collector: &TestCollector,
    key: &ApiKey,
    make: &impl Fn(&str) -> Event,
    done: impl Fn(&BatchAck) -> bool,
) -> BatchAck {
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let ack = send(collector, key, vec![make(&format!("probe-{attempt}"))]).await;
        if done(&ack) {
            return ack;
        }
        assert!(Instant::now() < deadline, "the new plan version never took effect: {ack:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}
