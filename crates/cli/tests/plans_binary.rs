//! `hourglass plans` as people meet it: the built binary on a standalone data directory of the test's own
//! (no server needed): push creates versions only for changes and lists them, show prints JSON that push
//! takes back, diff compares a file or two versions, history lists the versions, bad files are refused.

use std::path::Path;
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");

fn plans(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BINARY).arg("plans").arg("--data-dir").arg(data_dir).args(args).output().expect("run plans")
}

/// Runs `hourglass plans --data-dir <data_dir> <args>`, which must succeed; returns stdout.
fn plans_ok(data_dir: &Path, args: &[&str]) -> String {
    let Output { status, stdout, stderr } = plans(data_dir, args);
    let (stdout, stderr) = (String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap());
    assert!(status.success(), "plans {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

const FIRST: &str = r#"{"mode": "warn", "event_types": {"purchase": {"properties": {"price": {"type": "number"}}}}}"#;
const SECOND: &str = r#"{
  "mode": "enforce",
  "event_types": {
    "purchase": {"properties": {
      "price": {"type": "number", "required": true, "minimum": 0},
      "currency": {"type": "string", "enum": ["EUR", "USD"]}
    }},
    "view": {}
  }
}"#;

#[test]
fn plans_are_pushed_as_versions_shown_diffed_and_listed() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir = data_dir.path();
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (first, second) = (write("first.json", FIRST), write("second.json", SECOND));

    let stdout = plans_ok(data_dir, &["push", "--customer", "acme", &first]);
    assert!(stdout.starts_with("pushed plan v1 of acme (mode warn)"), "{stdout}");
    let reformatted = write("reformatted.json", &FIRST.replace(' ', "\n  "));
    let stdout = plans_ok(data_dir, &["push", "--customer", "acme", &reformatted]);
    assert!(stdout.starts_with("unchanged:") && stdout.contains("is plan v1 of acme"), "{stdout}");

    let stdout = plans_ok(data_dir, &["diff", "--customer", "acme", &second]);
    let expected_changes = "  ~ mode: warn -> enforce\n  + purchase.currency: string, enum EUR|USD\n  \
                            ~ purchase.price: number -> number, required, >= 0\n  + view (0 properties)\n";
    assert_eq!(stdout, format!("v1 -> {second}:\n{expected_changes}"));
    let stdout = plans_ok(data_dir, &["push", "--customer", "acme", &second]);
    assert!(stdout.starts_with("pushed plan v2 of acme (mode enforce)"), "{stdout}");
    assert!(stdout.ends_with(&format!("v1 -> v2:\n{expected_changes}")), "push lists the changes:\n{stdout}");
    assert_eq!(
        plans_ok(data_dir, &["diff", "--customer", "acme", "--from", "1", "--to", "2"]),
        format!("v1 -> v2:\n{expected_changes}")
    );
    assert_eq!(plans_ok(data_dir, &["diff", "--customer", "acme", &second]), format!("v2 -> {second}: no changes\n"));

    // Show prints JSON that push takes back as the same version.
    let shown = plans_ok(data_dir, &["show", "--customer", "acme", "--version", "1"]);
    let shown_file = write("shown.json", &shown);
    let stdout = plans_ok(data_dir, &["push", "--customer", "acme", &shown_file]);
    assert!(stdout.starts_with("pushed plan v3"), "v1 again is a change from v2: {stdout}");
    let current: serde_json::Value =
        serde_json::from_str(&plans_ok(data_dir, &["show", "--customer", "acme"])).unwrap();
    assert_eq!(current["mode"], "warn");

    let history = plans_ok(data_dir, &["history", "--customer", "acme"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(lines[0].starts_with("v1 ") && lines[0].ends_with("first version"), "{history}");
    assert!(
        lines[1].contains("mode enforce") && lines[1].contains("2 event types") && lines[1].ends_with("4 changes"),
        "{history}"
    );

    // Refusals say why and store nothing.
    let invalid =
        write("invalid.json", r#"{"event_types": {"buy": {"properties": {"p": {"type": "bool", "minimum": 1}}}}}"#);
    let Output { status, stderr, .. } = plans(data_dir, &["push", "--customer", "acme", &invalid]);
    let stderr = String::from_utf8(stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("buy.p: minimum does not apply to a bool"), "{stderr}");
    let Output { status, stderr, .. } = plans(data_dir, &["show", "--customer", "acme", "--version", "9"]);
    assert!(!status.success());
    assert!(String::from_utf8(stderr).unwrap().contains("customer acme has no plan version 9"));
    assert_eq!(plans_ok(data_dir, &["history", "--customer", "acme"]).lines().count(), 3);
}
