//! `hourglass erase` as an operator meets it: the built binary on a standalone data directory of the
//! test's own, holding two aggregated hours with a user's events. `--dry-run` prints the hours and event
//! counts and changes nothing; the erasure itself deletes the events, recomputes the hours and records a
//! done request; neither the user id nor the salt is ever printed.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use hourglass_aggregator::AggregatorConfig;
use hourglass_core::customer::CustomerId;
use hourglass_core::erasure::{ErasureState, ErasureStore};
use hourglass_core::job_queue::{CustomerHour, JobQueue};
use hourglass_core::raw_store::{RawStore, StoredEvent};
use hourglass_core::record_view::RecordView;
use hourglass_core::rollup_store::{EventTypeRollup, RollupStore};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::Event;

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");
const SALT: &str = "erase-binary-test-salt-0123456789";
/// The user's id is distinctive, so finding it in any output is meaningful.
const USER: &str = "person-to-forget-7f3a";

fn erase(data_dir: &Path, args: &[&str], salt: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(BINARY);
    command.arg("erase").arg("--data-dir").arg(data_dir).args(args).env_remove("HOURGLASS_ERASURE_SALT");
    if let Some(salt) = salt {
        command.env("HOURGLASS_ERASURE_SALT", salt);
    }
    let Output { status, stdout, stderr } = command.output().expect("run erase");
    (status.success(), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

fn hour_text(hour_start: i64) -> String {
    chrono::DateTime::from_timestamp(hour_start, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn raw_events(raw_store: &SqliteRawStore, hours: &[i64]) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    for hour_start in hours {
        for bucket in 0..raw_store.bucket_count() {
            events.extend(raw_store.read_bucket("acme", *hour_start, bucket).await.unwrap());
        }
    }
    events
}

async fn rollups(meta: &SqliteMetaStore, hours: &[i64]) -> Vec<Vec<EventTypeRollup>> {
    let mut rows = Vec::new();
    for hour_start in hours {
        let customer_hour = CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start: *hour_start };
        rows.push(meta.current_rollup(&customer_hour).await.unwrap());
    }
    rows
}

#[tokio::test]
async fn dry_run_changes_nothing_and_the_erasure_deletes_and_recomputes() {
    let data_dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    let current_hour = hourglass_core::hour::hour_start(now);
    let hours = [current_hour - 4 * 3600, current_hour - 3 * 3600];
    {
        let raw_store = SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
        let meta = SqliteMetaStore::open(data_dir.path()).await.unwrap();
        let mut records = Vec::new();
        for (hour_index, hour_start) in hours.iter().enumerate() {
            let events: Vec<Event> = (0..12)
                .map(|index| Event {
                    event_id: format!("{hour_index}-{index}"),
                    event_type: if index % 2 == 0 { "view" } else { "buy" }.into(),
                    occurred_at: Some(Timestamp { seconds: hour_start + index, nanos: 0 }),
                    user_id: Some(if index % 4 == 0 { USER.to_owned() } else { format!("someone-{index}") }),
                    properties: Default::default(),
                })
                .collect();
            records.push(support::accepted_record("acme", *hour_start, 100, format!("batch-{hour_index}"), events));
        }
        raw_store.write_records(&RecordView::from_records(&records)).await.unwrap();
        let marks: Vec<CustomerHour> = hours
            .iter()
            .map(|hour_start| CustomerHour { customer_id: CustomerId::new("acme").unwrap(), hour_start: *hour_start })
            .collect();
        meta.mark_dirty(&marks).await.unwrap();
        let config = AggregatorConfig::with_defaults();
        let (from, to) = (hours[0], hours[1] + 3600);
        hourglass_aggregator::reprocess::reprocess(&config, &raw_store, &meta, None, from, to, false, now, |_, _| {})
            .await
            .unwrap();
    }
    let raw_store = SqliteRawStore::open(data_dir.path(), 4).await.unwrap();
    let meta = SqliteMetaStore::open(data_dir.path()).await.unwrap();
    let raw_before = raw_events(&raw_store, &hours).await;
    let rollups_before = rollups(&meta, &hours).await;
    assert_eq!(raw_before.len(), 24);

    let (succeeded, stdout, stderr) =
        erase(data_dir.path(), &["--customer", "acme", "--user-id", USER, "--dry-run"], None);
    assert!(!succeeded, "no salt, no erasure:\n{stdout}{stderr}");
    assert!(stderr.contains("no erasure salt"), "{stderr}");

    let (succeeded, stdout, stderr) =
        erase(data_dir.path(), &["--customer", "acme", "--user-id", USER, "--dry-run"], Some(SALT));
    assert!(succeeded, "{stdout}{stderr}");
    for hour_start in hours {
        let line =
            stdout.lines().find(|line| line.contains(&hour_text(hour_start))).unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.starts_with("acme") && line.trim_end().ends_with(" 3"), "three events in each hour: {line}");
    }
    assert!(stdout.contains("dry run: 6 event(s) of the user in 2 hour(s) would be erased"), "{stdout}");
    assert_eq!(raw_events(&raw_store, &hours).await, raw_before, "a dry run deletes nothing");
    assert_eq!(rollups(&meta, &hours).await, rollups_before, "a dry run recomputes nothing");
    assert!(meta.list_erasures(None).await.unwrap().is_empty(), "a dry run records no request");

    let (succeeded, stdout, stderr) = erase(data_dir.path(), &["--customer", "acme", "--user-id", USER], Some(SALT));
    assert!(succeeded, "{stdout}{stderr}");
    assert!(stdout.contains("done: 6 event(s) erased from 2 hour(s)"), "{stdout}");
    let requests = meta.list_erasures(None).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].state, ErasureState::Done);
    assert!(stdout.contains(&requests[0].id), "the request's id is printed: {stdout}");
    let raw_after = raw_events(&raw_store, &hours).await;
    assert_eq!(raw_after.len(), 18);
    assert!(raw_after.iter().all(|event| event.user_id.as_deref() != Some(USER)));
    let rollups_after = rollups(&meta, &hours).await;
    let events_after: u64 = rollups_after.iter().flatten().map(|row| row.events).sum();
    assert_eq!(events_after, 18, "{rollups_after:?}");
    for output in [&stdout, &stderr] {
        assert!(!output.contains(USER) && !output.contains(SALT), "the user id or the salt is printed:\n{output}");
    }

    // Nothing is left to resume.
    let (succeeded, stdout, stderr) = erase(data_dir.path(), &["--resume"], Some(SALT));
    assert!(succeeded, "{stdout}{stderr}");
    assert!(stdout.contains("0 erasure request(s) resumed"), "{stdout}");
}
