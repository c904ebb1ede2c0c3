//! The connection limits of [`GrpcServer`] against abusive clients on real loopback connections: too
//! many connections, idle ones, a client that never finishes its headers, rapid stream resets
//! (CVE-2023-44487) and a CONTINUATION flood. The abusive clients write raw HTTP/2 frames, as an attacker
//! would, since a well-behaved client library cannot misbehave this way; the well-behaved side is
//! tonic's own client. `e2e/abuse` runs the same attacks against a running `hourglass standalone`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hourglass_grpc::GrpcServer;
use hourglass_grpc::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Bound of every wait for a condition; never the expected duration of anything.
const PATIENCE: Duration = Duration::from_secs(60);

const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: its 9-byte header, then `payload`.
fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    assert!(length < 1 << 24, "a frame's length has 24 bits");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream_id.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// An HPACK string literal, not Huffman-coded, shorter than 127 bytes.
fn hpack_string(value: &str) -> Vec<u8> {
    let length = u8::try_from(value.len()).unwrap();
    assert!(length < 127, "a one-byte length");
    let mut bytes = vec![length];
    bytes.extend(value.as_bytes());
    bytes
}

/// The HPACK block of a gRPC health check's request headers, with no dynamic table: indexed `:method
/// POST` and `:scheme http`, then literals without indexing (static names for `:path`, `:authority` and
/// `content-type`).
fn health_check_headers() -> Vec<u8> {
    let mut block = vec![0x83, 0x86];
    block.push(0x04);
    block.extend(hpack_string("/grpc.health.v1.Health/Check"));
    block.push(0x01);
    block.extend(hpack_string("localhost"));
    // content-type is static entry 31: 4-bit prefix 15, then 16.
    block.extend([0x0f, 0x10]);
    block.extend(hpack_string("application/grpc"));
    block.push(0x00);
    block.extend(hpack_string("te"));
    block.extend(hpack_string("trailers"));
    block
}

/// The client preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut bytes = CLIENT_PREFACE.to_vec();
    bytes.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    bytes
}

/// A server with `config` on a free loopback port, serving health and reflection only.
async fn serve(config: ServerConfig) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(GrpcServer::new(config).serve(listener, shutdown.clone()));
    (addr, shutdown)
}

fn config() -> ServerConfig {
    hourglass_config::defaults()
}

/// A channel on a new connection to `addr`.
async fn connect(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

async fn health_check(channel: Channel) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest { service: String::new() };
    Ok(HealthClient::new(channel).check(request).await?.into_inner().status)
}

/// The frames of `bytes` as (type, flags, stream, payload), up to the first incomplete one.
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        if rest.len() < 9 + length {
            break;
        }
        let stream_id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        frames.push((rest[3], rest[4], stream_id, rest[9..9 + length].to_vec()));
        rest = &rest[9 + length..];
    }
    frames
}

/// Reads what the server sends until it closes the connection (end of stream or reset); panics if it
/// is still open after [`PATIENCE`].
async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let reading = async {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading).await.expect("the server closes the connection");
    received
}

/// The error code of the GOAWAY among `bytes`' frames, if any.
fn goaway_code(bytes: &[u8]) -> Option<u32> {
    frames(bytes)
        .into_iter()
        .find(|(kind, ..)| *kind == FRAME_GOAWAY)
        .map(|(_, _, _, payload)| u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]))
}

/// A raw connection that has sent its preface and received the server's SETTINGS, so the server has
/// accepted it and holds it open.
async fn accepted_raw_connection(addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&preface()).await.ok()?;
    let mut header = [0u8; 9];
    let answered = tokio::time::timeout(PATIENCE, stream.read_exact(&mut header)).await.expect("an answer or a close");
    if answered.is_err() {
        return None;
    }
    assert_eq!(header[3], FRAME_SETTINGS, "the server's first frame is SETTINGS");
    // Its payload too, so that what is read next starts at a frame.
    let mut payload = vec![0u8; u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize];
    stream.read_exact(&mut payload).await.ok()?;
    Some(stream)
}

#[tokio::test]
async fn a_connection_beyond_max_connections_is_closed_at_once_and_a_freed_slot_is_served_again() {
    let (addr, shutdown) = serve(ServerConfig { max_client_connections: 2, ..config() }).await;
    let first = accepted_raw_connection(addr).await.expect("the first connection is served");
    let _second = accepted_raw_connection(addr).await.expect("the second connection is served");

    assert!(accepted_raw_connection(addr).await.is_none(), "a third connection is closed, not served");
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await;
    if let Ok(channel) = refused {
        assert!(health_check(channel).await.is_err(), "a call beyond the limit fails");
    }

    drop(first);
    let started = Instant::now();
    loop {
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await
            && health_check(channel).await.is_ok()
        {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "a freed slot is never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_connection_with_no_open_call_is_closed_after_the_idle_timeout_and_one_with_a_call_is_not() {
    let (addr, shutdown) = serve(ServerConfig { idle_connection_timeout_secs: 1, ..config() }).await;
    // A health Watch stays open until the server ends it: a long-lived call, like an ingest stream.
    let busy = connect(addr).await;
    let mut watch = HealthClient::new(busy.clone())
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("a watch call")
        .into_inner();
    watch.message().await.expect("the watch's first status").expect("one status");

    // Opened after the watch, so by the time it is closed the busy connection has outlived the timeout.
    let mut idle = accepted_raw_connection(addr).await.expect("an idle connection is accepted");
    read_until_closed(&mut idle).await;

    assert!(health_check(busy).await.is_ok(), "the connection with an open call is still served");
    shutdown.cancel();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed_after_the_idle_timeout() {
    let (addr, shutdown) = serve(ServerConfig { idle_connection_timeout_secs: 1, ..config() }).await;
    let mut slow = accepted_raw_connection(addr).await.expect("a connection is accepted");
    // A HEADERS frame announcing a full frame's payload, which then arrives a byte at a time.
    let announced = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0u8; 16 * 1024]);
    let trickle = async {
        for byte in &announced[..] {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let cut = tokio::time::timeout(PATIENCE, trickle).await.expect("the trickle ends");
    assert!(cut, "the server read the whole trickled frame instead of closing the connection");
    shutdown.cancel();
}

#[tokio::test]
async fn a_rapid_reset_connection_gets_goaway_enhance_your_calm() {
    let (addr, shutdown) = serve(config()).await;
    let attacker = accepted_raw_connection(addr).await.expect("a connection is accepted");
    // Read while writing: once the server closes, unread frames are lost to the connection's reset.
    let (mut reader, mut writer) = attacker.into_split();
    let reading = tokio::spawn(async move { read_until_closed(&mut reader).await });
    let headers = health_check_headers();
    for stream in 0..10_000u32 {
        let stream_id = 2 * stream + 1;
        let mut pair = frame(FRAME_HEADERS, FLAG_END_HEADERS, stream_id, &headers);
        pair.extend(frame(FRAME_RST_STREAM, 0, stream_id, &CANCEL.to_be_bytes()));
        if writer.write_all(&pair).await.is_err() {
            break;
        }
    }
    let received = reading.await.unwrap();
    assert_eq!(goaway_code(&received), Some(ENHANCE_YOUR_CALM), "frames received: {:?}", frame_kinds(&received));

    assert!(health_check(connect(addr).await).await.is_ok(), "the server still serves other connections");
    shutdown.cancel();
}

#[tokio::test]
async fn a_continuation_flood_is_cut_at_the_header_list_limit() {
    let max_header_list_bytes = 16 * 1024;
    let (addr, shutdown) = serve(ServerConfig { max_header_list_bytes, ..config() }).await;
    let mut attacker = accepted_raw_connection(addr).await.expect("a connection is accepted");
    let mut flood = frame(FRAME_HEADERS, 0, 1, &health_check_headers());
    // Each CONTINUATION adds a literal header of 1000 bytes; none ends the header block.
    let mut literal = vec![0x00];
    literal.extend(hpack_string("x-flood"));
    literal.extend([0x7f, 0xe9, 0x06]);
    literal.extend([b'a'; 1000]);
    let continuation = frame(FRAME_CONTINUATION, 0, 1, &literal);
    // Far past the limit and past what socket buffers hold: a server that buffered the whole block
    // would take it all.
    let flood_limit_bytes: usize = 64 * 1024 * 1024;
    let mut sent_bytes = 0;
    let mut cut = false;
    if attacker.write_all(&flood).await.is_err() {
        cut = true;
    }
    flood.clear();
    while !cut && sent_bytes < flood_limit_bytes {
        match tokio::time::timeout(PATIENCE, attacker.write_all(&continuation)).await {
            Ok(Ok(())) => sent_bytes += continuation.len(),
            Ok(Err(_)) => cut = true,
            Err(_) => panic!("the server neither reads the flood nor closes the connection"),
        }
    }
    assert!(cut, "{sent_bytes} bytes of CONTINUATION frames were taken without the connection being closed");
    assert!(health_check(connect(addr).await).await.is_ok(), "the server still serves other connections");
    shutdown.cancel();
}

/// The types of the frames among `bytes`, for a failure's message.
fn frame_kinds(bytes: &[u8]) -> Vec<u8> {
    frames(bytes).into_iter().map(|(kind, ..)| kind).collect()
}

#[test]
fn the_test_frames_are_well_formed() {
    let headers = frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &health_check_headers());
    let data = frame(FRAME_DATA, 0, 3, b"abc");
    let both: Vec<u8> = headers.iter().chain(&data).copied().collect();
    let parsed = frames(&both);
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].0, FRAME_HEADERS);
    assert_eq!(parsed[0].2, 3);
    assert_eq!(parsed[1], (FRAME_DATA, 0, 3, b"abc".to_vec()));
    // The flood's literal value length, an HPACK integer with a 7-bit prefix: 127, then 7 bits a byte.
    assert_eq!(127 + (0xe9 & 0x7f) + (0x06 << 7), 1000);
}
