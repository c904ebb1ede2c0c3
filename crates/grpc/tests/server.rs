//! The start-up server over real loopback connections: a role waiting for its backends reports
//! NOT_SERVING, then hands its listener on to its [`GrpcServer`] (whose own tests are in `serve.rs`).

use std::time::Duration;

use hourglass_grpc::GrpcServer;
use hourglass_grpc::server::{self, ServerConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn config() -> ServerConfig {
    hourglass_config::defaults()
}

async fn connect(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    for _ in 0..100 {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {addr}");
}

async fn health(channel: tonic::transport::Channel) -> i32 {
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status
}

#[tokio::test]
async fn a_role_waiting_for_its_backends_is_alive_but_not_serving_and_then_hands_its_listener_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (backends_ready_tx, backends_ready_rx) = tokio::sync::oneshot::channel::<&str>();
    let waiting = tokio::spawn(async move {
        server::not_serving_while(listener, &config(), &["hourglass.v1.QueryService"], &[], async move {
            backends_ready_rx.await.unwrap()
        })
        .await
        .unwrap()
    });

    let early = connect(addr).await;
    assert_eq!(health(early.clone()).await, ServingStatus::NotServing as i32, "not ready while waiting");
    // A probe that watches health keeps its stream open across the hand-over; it must not hold it up.
    let mut watching = HealthClient::new(early.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watching.message().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    assert!(hourglass_grpc::testing::listed_services_v1(early).await.contains(&"hourglass.v1.QueryService".to_owned()));

    backends_ready_tx.send("opened").unwrap();
    let (listener, opened) = waiting.await.unwrap();
    assert_eq!(opened, "opened");
    assert_eq!(listener.local_addr().unwrap(), addr, "the same socket, so clients never see a gap");

    // The real server on the handed-on listener (no service of its own here: health alone).
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(GrpcServer::new(config()).serve(listener, shutdown.clone()));
    assert_eq!(health(connect(addr).await).await, ServingStatus::Serving as i32);
    shutdown.cancel();
    drop(watching);
    serving.await.unwrap().unwrap();
}
