//! `hourglass keys` as people and scripts meet it: the built binary on a standalone data directory of
//! the test's own (no server needed). Text output is for people (no Rust debug dumps), `--output json`
//! parses, and `keys create` still prints the bare key alone on stdout.

use std::path::Path;
use std::process::{Command, Output};

use hourglass_core::api_key::ApiKey;

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");

/// Runs `hourglass keys --data-dir <data_dir> <args>`, which must succeed; returns stdout and stderr.
fn keys(data_dir: &Path, args: &[&str]) -> (String, String) {
    let Output { status, stdout, stderr } =
        Command::new(BINARY).arg("keys").arg("--data-dir").arg(data_dir).args(args).output().expect("run keys");
    let (stdout, stderr) = (String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap());
    assert!(status.success(), "keys {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// Text meant for people: nothing of a Rust debug dump.
fn assert_for_people(text: &str) {
    for noise in ["Some(", "None", "{", "}", "CustomerLimits", "KeyListing"] {
        assert!(!text.contains(noise), "{noise:?} in text output:\n{text}");
    }
}

#[test]
fn keys_output_is_for_people_and_json_for_scripts() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir = data_dir.path();

    // Text: the bare key alone on stdout (scripts redirect it to a file), the note on stderr.
    let (stdout, stderr) = keys(data_dir, &["create", "--customer", "acme", "--scope", "ingest", "--name", "web"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let ingest_key = ApiKey::parse(lines[0]).expect("stdout is the bare key");
    assert!(stderr.contains("shown once"), "{stderr}");

    // Limits in text: units, and "default" where unset.
    let (stdout, _) = keys(data_dir, &["limits", "--customer", "acme", "--events-per-second", "1000000"]);
    assert_for_people(&stdout);
    assert!(stdout.contains("1,000,000 events/s"), "{stdout}");
    assert_eq!(
        stdout.matches("default (").count(),
        4,
        "burst, spread and both cardinality limits are unset:\n{stdout}"
    );

    // JSON, with the flag before or after the subcommand: null where a limit is unset.
    let (stdout, _) = keys(data_dir, &["create", "--customer", "acme", "--scope", "query", "--output", "json"]);
    let created = json(&stdout);
    let query_key = ApiKey::parse(created["key"].as_str().unwrap()).expect("the key in JSON");
    assert_eq!(created["key_id"], query_key.id().to_string());
    assert_eq!((created["customer"].as_str(), created["scope"].as_str()), (Some("acme"), Some("query")));
    let (stdout, _) = keys(
        data_dir,
        &[
            "--output",
            "json",
            "limits",
            "--customer",
            "acme",
            "--burst-events",
            "5000",
            "--kafka-key-spread",
            "8",
            "--max-event-types-per-hour",
            "40",
        ],
    );
    let limits = json(&stdout);
    assert_eq!(limits["customer"], "acme");
    assert!(limits["events_per_second"].is_null(), "an omitted limit is the default again: {limits}");
    assert_eq!((limits["burst_events"].as_u64(), limits["kafka_key_spread"].as_u64()), (Some(5000), Some(8)));
    assert_eq!(limits["max_event_types_per_hour"].as_u64(), Some(40));
    assert!(limits["max_property_names_per_event_type"].is_null(), "{limits}");

    // Revoke, then list: aligned columns, no debug dump; JSON with the same facts.
    let ingest_id = ingest_key.id().to_string();
    let (stdout, _) = keys(data_dir, &["revoke", &ingest_id]);
    assert!(stdout.starts_with(&format!("revoked {ingest_id}")), "{stdout}");
    let (stdout, _) = keys(data_dir, &["revoke", &ingest_id, "--output", "json"]);
    assert_eq!(json(&stdout)["key_id"], ingest_id.as_str());

    let (stdout, _) = keys(data_dir, &["list"]);
    assert_for_people(&stdout);
    let table: Vec<&str> = stdout.lines().collect();
    assert_eq!(table.len(), 3, "a header and two keys:\n{stdout}");
    let created_column = table[0].find("CREATED").unwrap();
    for row in &table[1..] {
        assert!(row.starts_with("hgk_"), "{row}");
        assert!(row[created_column..].starts_with("20"), "the CREATED column is aligned:\n{stdout}");
    }
    let ingest_row = table.iter().find(|row| row.starts_with(&ingest_id)).unwrap();
    assert!(ingest_row.contains("UTC") && ingest_row.ends_with("web"), "{ingest_row}");

    let (stdout, _) = keys(data_dir, &["list", "--customer", "acme", "--output", "json"]);
    let listed = json(&stdout);
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 2);
    let ingest = listed.iter().find(|key| key["key_id"] == ingest_id.as_str()).unwrap();
    assert_eq!((ingest["scope"].as_str(), ingest["name"].as_str()), (Some("ingest"), Some("web")));
    assert!(ingest["revoked_at"].is_string(), "{ingest}");
    let query = listed.iter().find(|key| key["key_id"] == query_key.id().to_string().as_str()).unwrap();
    assert!(query["revoked_at"].is_null(), "{query}");
}
