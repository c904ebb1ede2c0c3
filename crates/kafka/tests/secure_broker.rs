//! Kafka over TLS with SASL/SCRAM-SHA-512, as managed Kafka offers it (MSK, Confluent Cloud, Strimzi's TLS
//! listener): on a broker of the test's own (`e2e/servers/kafka.sh start --secure`), the event log and its
//! consumer pass their conformance suite with the settings `kafka.sh env` prints, and a client with a wrong
//! password or without the CA is refused rather than served in plaintext.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::FutureExt;
use hourglass_conformance::event_log_consumer;
use hourglass_core::event_log::{EventLog, Topic};
use hourglass_kafka::{KafkaConfig, KafkaEventLog, KafkaEventLogConsumer, testing};

/// The instance's name and port: used by no other test (kafka.sh also takes PORT+1000 and PORT+2000).
const NAME: &str = "kafka-secure-test";
const PORT: u16 = 19692;

fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/servers/kafka.sh")
}

/// Starts the secure broker; returns the `HOURGLASS_KAFKA_OPTIONS` value `kafka.sh env` prints for it.
fn start_secure_broker() -> String {
    let started = Command::new("bash")
        .arg(kafka_script())
        .args(["start", "--name", NAME, "--port", &PORT.to_string(), "--secure"])
        .status()
        .expect("run e2e/servers/kafka.sh");
    assert!(started.success(), "kafka.sh start --secure failed");
    let env = Command::new("bash").arg(kafka_script()).args(["env", "--name", NAME]).output().expect("kafka.sh env");
    assert!(env.status.success(), "kafka.sh env failed");
    let printed = String::from_utf8(env.stdout).expect("UTF-8");
    printed
        .lines()
        .find_map(|line| line.strip_prefix("export HOURGLASS_KAFKA_OPTIONS='")?.strip_suffix('\''))
        .unwrap_or_else(|| panic!("kafka.sh env prints no HOURGLASS_KAFKA_OPTIONS for a secure instance: {printed}"))
        .to_owned()
}

struct StopOnDrop;

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(kafka_script()).args(["stop", "--name", NAME]).status();
    }
}

fn secure_config(test: &str, options: &str) -> KafkaConfig {
    let mut config = testing::test_config(test, &format!("127.0.0.1:{PORT}"));
    config.options_list = Some(options.to_owned());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_works_over_tls_with_scram_and_refuses_wrong_credentials() {
    let options = start_secure_broker();
    let _stop = StopOnDrop;
    assert!(options.contains("security.protocol=SASL_SSL"), "{options}");

    // With the printed settings, the log and its consumer behave as on a plaintext broker.
    let config = secure_config("secure_consumer", &options);
    let log = KafkaEventLog::connect(config.clone(), "secure-test").await.expect("connect over SASL_SSL");
    log.check_ready().await.expect("a secure broker with the right settings is ready");
    let consumer_config = config.clone();
    event_log_consumer::suite(&log, move |group: &'static str| {
        let config = consumer_config.clone();
        async move {
            let group = format!("{}.{group}", config.events_topic);
            KafkaEventLogConsumer::subscribe(&config, Topic::Events, &group, "secure-test").expect("subscribe")
        }
        .boxed()
    })
    .await;

    // A wrong password: authentication fails, so the log never reports ready.
    let wrong_password = options
        .split(';')
        .map(|option| if option.starts_with("sasl.password=") { "sasl.password=wrong" } else { option })
        .collect::<Vec<_>>()
        .join(";");
    refused("a wrong SCRAM password", secure_config("secure_wrong_password", &wrong_password)).await;
    // No CA: the broker's certificate cannot be verified, so no connection is made.
    let without_ca =
        options.split(';').filter(|option| !option.starts_with("ssl.ca.location=")).collect::<Vec<_>>().join(";");
    refused("a client that cannot verify the certificate", secure_config("secure_no_ca", &without_ca)).await;
}

/// `config` must never get a ready event log from the secure broker.
async fn refused(what: &str, config: KafkaConfig) {
    let connected = tokio::time::timeout(Duration::from_secs(10), async move {
        let log = KafkaEventLog::connect(config, "secure-test").await.map_err(|error| error.to_string())?;
        log.check_ready().await.map_err(|error| error.to_string())
    })
    .await;
    assert!(!matches!(connected, Ok(Ok(()))), "{what} must be refused, but the log reported ready");
}
