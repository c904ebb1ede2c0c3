//! The collector serving TLS (rustls), against the real broker and Postgres (tier b).

mod support;

use hourglass_core::api_key::Scope;
use hourglass_proto::v1::IngestBatchRequest;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use support::{TestCollector, authorized, event};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test]
async fn serves_tls_when_given_a_certificate_and_refuses_plaintext() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let directory = std::env::temp_dir().join(format!("hourglass-tls-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let cert_path = directory.join("cert.pem");
    let key_path = directory.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let collector = TestCollector::start_with("tls", &support::test_brokers(), |config| {
        config.server.tls_cert_path = Some(cert_path.clone());
        config.server.tls_key_path = Some(key_path.clone());
    })
    .await;
    let key = collector.create_key("acme", Scope::Ingest).await;

    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(certified.cert.pem())).domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", collector.address))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake with the collector");
    let ack = IngestServiceClient::new(channel)
        .ingest_batch(authorized(IngestBatchRequest { events: vec![event("tls-1")] }, &key))
        .await
        .expect("ingest over TLS")
        .into_inner()
        .ack
        .unwrap();
    assert_eq!(ack.accepted_count, 1);

    let plaintext = IngestServiceClient::new(collector.channel().await)
        .ingest_batch(authorized(IngestBatchRequest { events: vec![event("plain-1")] }, &key))
        .await;
    assert!(plaintext.is_err(), "a TLS listener must not serve plaintext gRPC");
    collector.stop().await;
    std::fs::remove_dir_all(&directory).ok();
}
