//! The [`PlanStore`] contract: what `hourglass plans` and the collector's plan cache rely on.
//!
//! Run [`suite`] on an empty store. It covers: a customer without a plan has version 0, no current plan
//! and no history; the first push creates version 1; pushing the same plan again, however written, changes
//! nothing; a different plan creates the next version, which becomes current while the earlier ones stay
//! readable by number; an unknown version is not found; history lists every version oldest first; one
//! customer's plans never show in another's; concurrent pushes of different plans get distinct,
//! contiguous versions.

use hourglass_core::customer::CustomerId;
use hourglass_core::tracking_plan::store::{PlanStore, PushOutcome};
use hourglass_core::tracking_plan::{PlanDocument, PlanMode};

fn customer(name: &str) -> CustomerId {
    CustomerId::new(name).unwrap_or_else(|error| panic!("test customer id {name:?} is valid: {error}"))
}

fn plan(json: &str) -> PlanDocument {
    PlanDocument::parse(json).unwrap_or_else(|error| panic!("test plan is valid: {error}"))
}

/// Runs the whole plan store contract against `store`, which must be empty.
pub async fn suite(store: &impl PlanStore) {
    versions_grow_only_when_the_plan_changes(store).await;
    customers_are_kept_apart(store).await;
    concurrent_pushes_get_distinct_versions(store).await;
}

async fn versions_grow_only_when_the_plan_changes(store: &impl PlanStore) {
    let acme = customer("plans-acme");
    assert_eq!(store.current_version(&acme).await.expect("read the version"), 0, "no plan: version 0");
    assert_eq!(store.plan(&acme, None).await.expect("read the plan"), None, "no plan: none current");
    assert!(store.plan_history(&acme).await.expect("read the history").is_empty(), "no plan: no history");

    let first = plan(r#"{"mode": "warn", "event_types": {"view": {"properties": {"path": {"type": "string"}}}}}"#);
    assert_eq!(store.push_plan(&acme, &first).await.expect("push"), PushOutcome::Created(1), "the first is v1");
    let same_written_otherwise = plan(
        r#"{ "event_types": { "view": { "properties": { "path": { "required": false, "type": "string" } } } },
             "undeclared_properties": "warn", "mode": "warn" }"#,
    );
    assert_eq!(
        store.push_plan(&acme, &same_written_otherwise).await.expect("push"),
        PushOutcome::Unchanged(1),
        "the same plan, however written, is no new version"
    );
    let mut second = first.clone();
    second.mode = PlanMode::Enforce;
    assert_eq!(store.push_plan(&acme, &second).await.expect("push"), PushOutcome::Created(2), "a change is v2");
    assert_eq!(store.push_plan(&acme, &first).await.expect("push"), PushOutcome::Created(3), "going back is v3");
    assert_eq!(store.current_version(&acme).await.expect("read the version"), 3);

    let current = store.plan(&acme, None).await.expect("read the plan").expect("a current plan");
    assert_eq!((current.version, &current.document), (3, &first), "the latest push is current");
    let old = store.plan(&acme, Some(2)).await.expect("read v2").expect("v2 is kept");
    assert_eq!((old.version, &old.document), (2, &second), "earlier versions stay readable by number");
    assert_eq!(store.plan(&acme, Some(4)).await.expect("read v4"), None, "no version 4 yet");
    assert_eq!(store.plan(&acme, Some(0)).await.expect("read v0"), None, "versions start at 1");

    let history = store.plan_history(&acme).await.expect("read the history");
    let versions: Vec<u32> = history.iter().map(|stored| stored.version).collect();
    assert_eq!(versions, [1, 2, 3], "history lists every version, oldest first");
    assert_eq!(history[1].document, second);
    assert!(history.windows(2).all(|pair| pair[0].created_at <= pair[1].created_at), "pushed in order");
}

async fn customers_are_kept_apart(store: &impl PlanStore) {
    let globex = customer("plans-globex");
    let initech = customer("plans-initech");
    let document = plan(r#"{"mode": "enforce", "event_types": {"buy": {}}}"#);
    assert_eq!(store.push_plan(&globex, &document).await.expect("push"), PushOutcome::Created(1));
    assert_eq!(
        store.push_plan(&initech, &document).await.expect("push"),
        PushOutcome::Created(1),
        "each customer numbers its own versions"
    );
    let other = plan(r#"{"mode": "warn", "event_types": {}}"#);
    assert_eq!(store.push_plan(&globex, &other).await.expect("push"), PushOutcome::Created(2));
    assert_eq!(store.current_version(&initech).await.expect("read the version"), 1, "another's push is not ours");
    assert_eq!(store.plan_history(&initech).await.expect("history").len(), 1);
}

async fn concurrent_pushes_get_distinct_versions(store: &impl PlanStore) {
    let hooli = customer("plans-hooli");
    let documents: Vec<PlanDocument> =
        (0..6).map(|index| plan(&format!(r#"{{"mode": "warn", "event_types": {{"type_{index}": {{}}}}}}"#))).collect();
    let pushes = documents.iter().map(|document| store.push_plan(&hooli, document));
    let mut versions: Vec<u32> =
        futures::future::join_all(pushes).await.into_iter().map(|pushed| pushed.expect("push").version()).collect();
    versions.sort_unstable();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6], "concurrent pushes of different plans get distinct versions");
    let history = store.plan_history(&hooli).await.expect("history");
    for stored in history {
        assert!(documents.contains(&stored.document), "every version holds one of the pushed plans");
    }
}
