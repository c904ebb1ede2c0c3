//! The built binary (tier c) with a configuration file: `hourglass config print` shows where each setting
//! came from (flag, variable, file, default) with secrets hidden, and what it prints loads back; a role
//! started with `--config` runs with the file's settings; a typo in the file, or a variable the flag
//! refuses, stops a role before it starts, saying where. Each child gets only the environment the test
//! gives it (`env_clear`): the test's own environment is never changed.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");

/// Only a process that did not refuse to start runs this long.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(60);

fn hourglass(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BINARY).env_clear().envs(env.iter().copied()).args(args).output().expect("run hourglass")
}

/// `key = value` of each setting a printed configuration sets, without its origin.
fn printed_settings(printed: &str) -> BTreeMap<String, String> {
    printed
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(" = "))
        .map(|line| {
            let (setting, _origin) = line.rsplit_once(" # ").expect("every setting says where it came from");
            let (key, value) = setting.split_once(" = ").unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn toml_string(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("a UTF-8 temporary path"))
}

#[test]
fn config_print_shows_where_each_setting_came_from_hides_secrets_and_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hourglass.toml");
    std::fs::write(
        &file,
        "kafka-brokers = \"file-broker:9092\"\n\
         database-url = \"postgres://app:leaked-file-password@db:5432/hourglass\"\n\
         \n\
         [collector]\n\
         max-in-flight-bytes = 1048576\n\
         kafka-option = [\"client.rack=a\", \"socket.keepalive.enable=true\"]\n\
         kafka-create-topics = false\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let env = [
        ("HOURGLASS_KAFKA_BROKERS", "env-broker:9092"),
        ("HOURGLASS_KAFKA_OPTIONS", "sasl.username=app;sasl.password=leaked-kafka-password"),
    ];
    let output =
        hourglass(&["config", "print", "collector", "--config", file_arg, "--listen-addr", "127.0.0.1:7001"], &env);
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let expected_lines = [
        "[collector]".to_owned(),
        "listen-addr = \"127.0.0.1:7001\" # flag".to_owned(),
        "kafka-brokers = \"env-broker:9092\" # env HOURGLASS_KAFKA_BROKERS".to_owned(),
        format!("max-in-flight-bytes = 1048576 # file {file_arg}:5 [collector]"),
        format!("kafka-option = [\"client.rack=a\", \"socket.keepalive.enable=true\"] # file {file_arg}:6 [collector]"),
        format!("kafka-create-topics = false # file {file_arg}:7 [collector]"),
        format!("database-url = \"postgres://app:<hidden>@db:5432/hourglass\" # file {file_arg}:2"),
        "kafka-options = \"<hidden>\" # env HOURGLASS_KAFKA_OPTIONS".to_owned(),
        "quota-events-per-second = 20000 # default".to_owned(),
        "# collector-id = <unset>".to_owned(),
    ];
    for line in expected_lines {
        assert!(printed.lines().any(|printed_line| printed_line == line), "no line {line:?} in:\n{printed}");
    }
    assert!(!printed.contains("leaked"), "a secret is printed:\n{printed}");

    // What it printed, loaded back alone (no variable, no flag), prints the same settings.
    let printed_file = dir.path().join("printed.toml");
    std::fs::write(&printed_file, &printed).unwrap();
    let again = hourglass(&["config", "print", "collector", "--config", printed_file.to_str().unwrap()], &[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let reprinted = String::from_utf8(again.stdout).unwrap();
    assert_eq!(printed_settings(&reprinted), printed_settings(&printed));
    assert!(printed_settings(&printed).len() > 30, "{printed}");
}

#[tokio::test]
async fn standalone_runs_with_the_listen_address_and_data_directory_of_its_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("standalone.toml");
    std::fs::write(
        &file,
        format!("[standalone]\nlisten-addr = \"127.0.0.1:{port}\"\ndata-dir = {}\n", toml_string(&data_dir)),
    )
    .unwrap();
    let mut standalone = support::KillOnDrop(
        Command::new(BINARY)
            .env_clear()
            .env("HOURGLASS_LOG", "info")
            .args(["standalone", "--config", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            // Service logs go to stdout by default; these tests read them from stderr.
            .env("HOURGLASS_LOG_OUTPUT", "stderr")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hourglass standalone"),
    );
    let mut welcome = Vec::new();
    let mut lines = BufReader::new(standalone.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.expect("read standalone's stdout");
        let last = line.starts_with("Stop with Ctrl-C");
        welcome.push(line);
        if last {
            break;
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let welcome = welcome.join("\n");
    assert!(welcome.contains(&data_dir.display().to_string()), "{welcome}");

    support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut standalone, Duration::from_secs(30)).await;
    assert!(data_dir.join("log.db").exists(), "the data directory of the file holds standalone's data");
    let (status, logs) = support::sigterm_and_wait(&mut standalone).await;
    assert!(status.success(), "{status}: {logs}");
}

/// Runs `hourglass args` with only `env`, expects it to exit on its own, and returns its status and stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = support::KillOnDrop(
        Command::new(BINARY)
            .env_clear()
            .envs(env.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            // Service logs go to stdout by default; these tests read them from stderr.
            .env("HOURGLASS_LOG_OUTPUT", "stderr")
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hourglass"),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hourglass") {
            break status;
        }
        assert!(started.elapsed() < REFUSAL_DEADLINE, "hourglass {args:?} did not refuse to start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().expect("piped stderr")).unwrap();
    (status, stderr)
}

#[test]
fn a_typo_in_the_file_or_a_refused_variable_stops_a_role_before_it_starts_saying_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "kafka-brokers = \"k:9092\"\n[collector]\nlisten-adr = \"127.0.0.1:0\"\n").unwrap();
    let (status, stderr) = refused(&["collector", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:3: unknown key `listen-adr` in [collector]: `hourglass collector` has no flag --listen-adr \
             (did you mean `listen-addr`?)",
            file.display()
        )),
        "{stderr}"
    );

    // The file named by the variable is checked the same way.
    let (status, stderr) = refused(&["ingestor"], &[("HOURGLASS_CONFIG", file.to_str().unwrap())]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `listen-adr` in [collector]"), "{stderr}");

    let (status, stderr) = refused(&["collector"], &[("HOURGLASS_MAX_IN_FLIGHT_BYTES", "12")]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HOURGLASS_MAX_IN_FLIGHT_BYTES (environment): invalid value '12'"), "{stderr}");
}
