//! Server settings shared by every Hourglass gRPC server: hardened HTTP/2 limits, optional TLS,
//! reflection for grpcurl and `buf curl`, and health reporting; and [`not_serving_while`], the start-up
//! server a role shows while it waits for its backends. Serving itself, and the ordered shutdown, is
//! [`GrpcServer`](crate::serve::GrpcServer)'s.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// gRPC server limits: the defaults are safe to expose to the internet behind a balancer.
#[derive(Clone, Debug, clap::Args)]
pub struct ServerConfig {
    /// Largest gRPC message accepted, in bytes. Larger messages fail the call with OUT_OF_RANGE before
    /// they are decoded; batch limits (`--max-batch-bytes`) are checked after.
    #[arg(long = "max-message-bytes", env = "HOURGLASS_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Most concurrent gRPC streams (calls) per HTTP/2 connection.
    #[arg(long = "max-concurrent-streams", env = "HOURGLASS_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub max_concurrent_streams: u32,

    /// Largest HTTP/2 header list accepted, in bytes. It also bounds a header block sent as endless
    /// CONTINUATION frames: the connection is closed once the block passes it.
    #[arg(long = "max-header-list-bytes", env = "HOURGLASS_MAX_HEADER_LIST_BYTES", default_value_t = 16 * 1024)]
    pub max_header_list_bytes: u32,

    /// Most open connections; one accepted beyond it is closed at once (counted in
    /// `hourglass_grpc_connections_refused_total`), so a flood of connections costs file descriptors
    /// and memory up to this bound only.
    #[arg(
        long = "max-connections",
        env = "HOURGLASS_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    // Not `max_connections`: clap names an argument by its field, and the database's pool setting
    // (`--database-max-connections`) already has that name in the same commands.
    pub max_client_connections: usize,

    /// A connection with no open call for this long is closed, whether or not it answers keepalive
    /// pings: idle connections, and clients that never finish sending a call's headers, hold a slot of
    /// `--max-connections` for this long at most.
    #[arg(
        long = "idle-connection-timeout-secs",
        env = "HOURGLASS_IDLE_CONNECTION_TIMEOUT_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_connection_timeout_secs: u64,

    /// Streams a client may open and reset before the server has taken them up, per connection; beyond
    /// it the connection gets GOAWAY (ENHANCE_YOUR_CALM): the rapid-reset attack (CVE-2023-44487).
    #[arg(long = "max-pending-reset-streams", env = "HOURGLASS_MAX_PENDING_RESET_STREAMS", default_value_t = 20)]
    pub max_pending_reset_streams: usize,

    /// Streams the server may reset for a client's protocol errors, per connection; beyond it the
    /// connection gets GOAWAY (ENHANCE_YOUR_CALM), so a client cannot make it reset streams forever.
    #[arg(long = "max-local-reset-streams", env = "HOURGLASS_MAX_LOCAL_RESET_STREAMS", default_value_t = 1024)]
    pub max_local_reset_streams: usize,

    /// Interval of HTTP/2 keepalive pings to idle connections.
    #[arg(long = "keepalive-interval-secs", env = "HOURGLASS_KEEPALIVE_INTERVAL_SECS", default_value_t = 30)]
    pub keepalive_interval_secs: u64,

    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long = "keepalive-timeout-secs", env = "HOURGLASS_KEEPALIVE_TIMEOUT_SECS", default_value_t = 10)]
    pub keepalive_timeout_secs: u64,

    /// Close connections after this long (clients reconnect, and a balancer spreads them anew).
    #[arg(long = "max-connection-age-secs", env = "HOURGLASS_MAX_CONNECTION_AGE_SECS", default_value_t = 1800)]
    pub max_connection_age_secs: u64,

    /// PEM certificate chain; with `--tls-key-path`, the server speaks TLS only.
    #[arg(long = "tls-cert-path", env = "HOURGLASS_TLS_CERT_PATH", requires = "tls_key_path")]
    pub tls_cert_path: Option<PathBuf>,

    /// PEM private key for `--tls-cert-path`.
    #[arg(long = "tls-key-path", env = "HOURGLASS_TLS_KEY_PATH", requires = "tls_cert_path")]
    pub tls_key_path: Option<PathBuf>,

    /// After SIGTERM, how long health reports NOT_SERVING before the server stops accepting, so
    /// balancers take it out of rotation first.
    #[arg(long = "shutdown-delay-ms", env = "HOURGLASS_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// After that, how long open calls may take to finish before they are cut.
    #[arg(long = "drain-timeout-secs", env = "HOURGLASS_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,

    /// How often readiness (the backends reachable) is checked for the health service.
    #[arg(long = "readiness-interval-ms", env = "HOURGLASS_READINESS_INTERVAL_MS", default_value_t = 5_000)]
    pub readiness_interval_ms: u64,
}

/// Why a gRPC server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum GrpcServerError {
    /// The TLS certificate or key could not be read.
    #[error("failed to read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("failed to build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server stopped accepting connections without being asked to.
    #[error("the gRPC server stopped accepting connections on its own")]
    EndedEarly,
}

/// A server builder with the configured limits and, if configured, TLS.
pub fn server_builder(config: &ServerConfig) -> Result<Server, GrpcServerError> {
    let mut server = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(config.max_header_list_bytes)
        .http2_max_pending_accept_reset_streams(Some(config.max_pending_reset_streams))
        .http2_max_local_error_reset_streams(Some(config.max_local_reset_streams))
        .http2_keepalive_interval(Some(Duration::from_secs(config.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(Duration::from_secs(config.keepalive_timeout_secs)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .tcp_nodelay(true)
        .max_connection_age(Duration::from_secs(config.max_connection_age_secs));
    if let (Some(cert_path), Some(key_path)) = (&config.tls_cert_path, &config.tls_key_path) {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| GrpcServerError::TlsFile { path: path.clone(), source })
        };
        let identity = Identity::from_pem(read(cert_path)?, read(key_path)?);
        server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    Ok(server)
}

/// The health service's name, listed by reflection beside a server's own services.
pub const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";

/// Serves health (NOT_SERVING for the whole server, `services` and `health_only_names`) and reflection
/// (listing `services`) on `listener` while `opening` runs, then stops and gives the listener back with
/// `opening`'s output. A role that must wait for its backends at start-up (a fresh machine, a database
/// still starting, a schema another process creates) is then visibly alive but not ready, to probes and
/// to `grpcurl`, instead of refusing connections or crash-looping. `services` and `health_only_names`
/// are those the role's [`GrpcServer`](crate::serve::GrpcServer) will serve and report under. Connections
/// still open a second after `opening` finished (a health `Watch`) are left to end on their own; new ones
/// reach the real server.
pub async fn not_serving_while<T>(
    listener: tokio::net::TcpListener,
    config: &ServerConfig,
    services: &[&str],
    health_only_names: &[&str],
    opening: impl Future<Output = T>,
) -> Result<(tokio::net::TcpListener, T), GrpcServerError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_names: Vec<&str> = services.iter().chain(health_only_names).copied().collect();
    set_health(&reporter, &health_names, ServingStatus::NotServing).await;
    let router = server_builder(config)?
        .add_service(health_service)
        .add_service(reflection_v1(services)?)
        .add_service(reflection_v1alpha(services)?);
    let listener = std::sync::Arc::new(listener);
    let accepting = std::sync::Arc::clone(&listener);
    let incoming = accept_shared(accepting);
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    // Boxed, not pinned on the stack, so that dropping it below really drops the accept loop that
    // holds the other reference to the listener.
    let mut serving = Box::pin(serving);
    let mut opening = std::pin::pin!(opening);
    let opened = tokio::select! {
        opened = &mut opening => opened,
        result = &mut serving => {
            result?;
            opening.await
        }
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut serving).await;
    drop(serving);
    let listener = std::sync::Arc::try_unwrap(listener)
        .unwrap_or_else(|_| unreachable!("the start-up server, and its accept loop, were dropped"));
    Ok((listener, opened))
}

/// Accepted connections of a shared listener, with `TCP_NODELAY` as [`incoming`] sets it.
fn accept_shared(
    listener: std::sync::Arc<tokio::net::TcpListener>,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.and_then(|(stream, _peer)| {
            stream.set_nodelay(true)?;
            Ok(stream)
        });
        Some((accepted, listener))
    })
}

/// The connections `listener` accepts, set up as tonic sets up the ones it accepts itself: with
/// `TCP_NODELAY`, without which Nagle's algorithm holds back the small last frame of a response (the
/// trailers) until the client's delayed ACK, adding ~40 ms to every call; and with TCP keepalive. Tonic
/// applies its own `tcp_nodelay` setting only to listeners it binds, so every server given a listener
/// must go through here.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// The names reflection lists: the server's own services, health, and reflection itself.
fn listed_services(services: &[&str]) -> Vec<String> {
    let mut listed: Vec<String> = services.iter().map(|service| (*service).to_owned()).collect();
    listed.push(HEALTH_SERVICE_NAME.to_owned());
    listed.push("grpc.reflection.v1.ServerReflection".to_owned());
    listed.push("grpc.reflection.v1alpha.ServerReflection".to_owned());
    listed
}

/// `grpc.reflection.v1`, listing exactly `services` (plus health and reflection), so `grpcurl list`
/// never offers a call this server answers with UNIMPLEMENTED.
pub(crate) fn reflection_v1(
    services: &[&str],
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    GrpcServerError,
> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hourglass_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for service in listed_services(services) {
        builder = builder.with_service_name(service);
    }
    Ok(builder.build_v1()?)
}

/// `grpc.reflection.v1alpha`, the same for older clients (grpcurl falls back to it).
pub(crate) fn reflection_v1alpha(
    services: &[&str],
) -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    GrpcServerError,
> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hourglass_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for service in listed_services(services) {
        builder = builder.with_service_name(service);
    }
    Ok(builder.build_v1alpha()?)
}

/// A gRPC status code as a metric label: the codes our services return by name, the rest as "other",
/// so the label stays bounded.
pub fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "ok",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::Internal => "internal",
        _ => "other",
    }
}

/// Reports `status` for the whole server (the empty service name) and for each of `services`.
pub(crate) async fn set_health(reporter: &HealthReporter, services: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(*service, status).await;
    }
}
