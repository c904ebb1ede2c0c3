//! [`GrpcServer`]: how every Hourglass gRPC server serves and shuts down. The collector, the query
//! service, the ingestor's health server and standalone (ingest and query on one port) are each one
//! `GrpcServer` with their services added.
//!
//! Serving: the hardened settings of [`ServerConfig`] (HTTP/2 limits, keepalive, connection age,
//! optional TLS), at most `--max-connections` open and each closed after `--idle-connection-timeout-secs`
//! with no call open, `TCP_NODELAY` on every accepted connection, `grpc.health.v1` following readiness
//! (every `--readiness-interval-ms`), and reflection, v1 and v1alpha, listing exactly the services added.
//!
//! The ordered shutdown, once the shutdown token is cancelled (the first SIGTERM) or the event given to
//! [`GrpcServer::stop_when`] happens:
//! 1. health reports NOT_SERVING for the whole server and every service, and stops following readiness;
//! 2. `--shutdown-delay-ms` passes with the server still accepting, so balancers take it out of rotation
//!    before it refuses connections;
//! 3. the server stops accepting and [`GrpcServer::drain_signal`] fires: long-lived streams finish what
//!    they hold and close;
//! 4. open calls get at most `--drain-timeout-secs` to end; connections still open then are cut, and
//!    how many is logged;
//! 5. the flush steps ([`GrpcServer::flush_after_drain`]) run in order, each within its deadline;
//! 6. [`GrpcServer::serve`] returns what stopped it.
//!
//! A failure of the server itself ends serving too: streams drain, connections are cut, the flush steps
//! run, and the error is returned. A second signal forcing the exit belongs to the process (the
//! `hourglass` binary's signal handler), not to the server.

use std::convert::Infallible;
use std::fmt::Display;
use std::pin::pin;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::connections::{ConnectionLimits, Connections};
use crate::server::{
    GrpcServerError, ServerConfig, incoming, reflection_v1, reflection_v1alpha, server_builder, set_health,
};
use crate::streams::CountStreamsLayer;
use crate::telemetry;

/// How long cut connections may take to close before the flush steps run anyway (see
/// [`Connections::cut`]: a scheduling round, normally).
const CUT_WAIT: Duration = Duration::from_secs(1);

/// A readiness check: `Ok` while the backends it checks answer, else why not.
type ReadinessCheck<'a> = Box<dyn FnMut() -> BoxFuture<'a, Result<(), String>> + Send + 'a>;

/// A step of the shutdown after the drain.
struct FlushStep<'a> {
    /// What it flushes, for the log.
    what: &'static str,
    deadline: Duration,
    flush: Box<dyn FnOnce(Duration) -> BoxFuture<'a, Result<(), String>> + Send + 'a>,
}

/// What started the shutdown of a [`GrpcServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown token was cancelled.
    Shutdown,
    /// The event given to [`GrpcServer::stop_when`] happened, for this reason.
    Event(String),
}

/// A gRPC server being assembled: its services, readiness checks and flush steps; then
/// [`GrpcServer::serve`]. `'a` is the lifetime of what the checks, steps and stop event borrow.
pub struct GrpcServer<'a> {
    config: ServerConfig,
    routes: Routes,
    /// Names of the services added, which health reports under and reflection lists.
    service_names: Vec<&'static str>,
    /// Names health also reports under, with no service behind them (see [`GrpcServer::health_name`]).
    health_only_names: Vec<&'static str>,
    drain: CancellationToken,
    readiness_checks: Vec<ReadinessCheck<'a>>,
    flush_steps: Vec<FlushStep<'a>>,
    stop_event: Option<BoxFuture<'a, String>>,
    /// Whether HTTP/1.1 is accepted besides HTTP/2: set by [`GrpcServer::add_web_routes`].
    accept_http1: bool,
}

impl<'a> GrpcServer<'a> {
    /// A server with `config`'s settings, no service yet (health and reflection are added by
    /// [`GrpcServer::serve`]).
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            routes: Routes::default(),
            service_names: Vec::new(),
            health_only_names: Vec::new(),
            drain: CancellationToken::new(),
            readiness_checks: Vec::new(),
            flush_steps: Vec::new(),
            stop_event: None,
            accept_http1: false,
        }
    }

    /// The server's settings (services take their message limits from them).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Cancelled at step 3 of the shutdown, when the server stops accepting: a service with long-lived
    /// streams (the collector's ingest streams) makes them finish what they hold and close on it, so they
    /// end within the drain timeout instead of being cut.
    pub fn drain_signal(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Serves `service`; health reports under its name and reflection lists it.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Serves `routes`, plain HTTP beside the gRPC services (the query service's web console), and accepts
    /// HTTP/1.1 besides HTTP/2: a browser without TLS fetches the page and makes its gRPC-Web calls over
    /// HTTP/1.1. The gRPC paths (`/<package.Service>/<Method>`) stay the services'; anything else not in
    /// `routes` is still answered UNIMPLEMENTED. Health and reflection do not list web routes.
    pub fn add_web_routes(mut self, routes: axum::Router) -> Self {
        self.routes = Routes::from(self.routes.into_axum_router().merge(routes));
        self.accept_http1 = true;
        self
    }

    /// A name health also reports under, for a server with no service of its own to name (the ingestor's
    /// health server, which probes ask about `hourglass.ingestor`). Reflection does not list it: there is
    /// no service to call.
    pub fn health_name(mut self, name: &'static str) -> Self {
        self.health_only_names.push(name);
        self
    }

    /// A readiness check: the server is SERVING while every check passes (they run in the order added,
    /// every `--readiness-interval-ms`), NOT_SERVING with the first failure's reason logged otherwise.
    pub fn readiness<Check, Checked, CheckError>(mut self, mut check: Check) -> Self
    where
        Check: FnMut() -> Checked + Send + 'a,
        Checked: Future<Output = Result<(), CheckError>> + Send + 'a,
        CheckError: Display,
    {
        self.readiness_checks.push(Box::new(move || {
            let checked = check();
            Box::pin(async move { checked.await.map_err(|error| error.to_string()) })
        }));
        self
    }

    /// A step run after the drain (step 5), given `deadline` and cut there: flushing what the calls
    /// handed on, such as the collector's event log. Nothing acknowledged may wait on it (invariant 1 of
    /// docs/architecture.md: an ack is sent once the batch is durable), so a step that fails or overruns
    /// is logged, not returned. Steps run in the order added.
    pub fn flush_after_drain<Flush, Flushing, FlushError>(
        mut self,
        what: &'static str,
        deadline: Duration,
        flush: Flush,
    ) -> Self
    where
        Flush: FnOnce(Duration) -> Flushing + Send + 'a,
        Flushing: Future<Output = Result<(), FlushError>> + Send + 'a,
        FlushError: Display,
    {
        let flush = Box::new(move |deadline| {
            let flushing = flush(deadline);
            Box::pin(async move { flushing.await.map_err(|error| error.to_string()) }) as BoxFuture<'a, _>
        });
        self.flush_steps.push(FlushStep { what, deadline, flush });
        self
    }

    /// Starts the same ordered shutdown as the shutdown token when `event` resolves, with the reason it
    /// resolves to: standalone stops when its ingestion does. Whatever must happen before health says
    /// NOT_SERVING (standalone's log refusing appends) belongs at the end of `event`. One event per
    /// server.
    pub fn stop_when(mut self, event: impl Future<Output = String> + Send + 'a) -> Self {
        debug_assert!(self.stop_event.is_none(), "one stop event per server");
        self.stop_event = Some(Box::pin(event));
        self
    }

    /// Serves on `listener` until `shutdown` is cancelled, the stop event happens or the server fails,
    /// then shuts down in order (see the module's docs) and returns what stopped it.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<Stopped, GrpcServerError> {
        let GrpcServer {
            config,
            routes,
            service_names,
            health_only_names,
            drain,
            mut readiness_checks,
            flush_steps,
            stop_event,
            accept_http1,
        } = self;
        let health_names: Vec<&str> = service_names.iter().chain(&health_only_names).copied().collect();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&reporter, &health_names, ServingStatus::NotServing).await;
        telemetry::describe();
        let router = server_builder(&config)?
            .accept_http1(accept_http1)
            .layer(CountStreamsLayer)
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection_v1(&service_names)?)
            .add_service(reflection_v1alpha(&service_names)?);
        let connections = Connections::new();
        let limits = ConnectionLimits {
            max_connections: config.max_client_connections,
            idle_timeout: Duration::from_secs(config.idle_connection_timeout_secs),
        };
        let accepted = connections.track(incoming(listener), limits);
        let serving = router.serve_with_incoming_shutdown(accepted, drain.clone().cancelled_owned());
        let mut serving = pin!(serving);

        let readiness_interval = Duration::from_millis(config.readiness_interval_ms);
        let stop_requested = async {
            let stop_event = async move {
                match stop_event {
                    Some(event) => event.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => Stopped::Shutdown,
                cause = stop_event => Stopped::Event(cause),
                never = follow_readiness(&reporter, &health_names, readiness_interval, &mut readiness_checks) => {
                    match never {}
                }
            }
        };
        // Whichever comes first; the other is not polled again.
        let (mut served, stopped) = tokio::select! {
            result = &mut serving => (Some(result), None),
            stopped = stop_requested => (None, Some(stopped)),
        };

        match (&served, &stopped) {
            (_, Some(Stopped::Shutdown)) => tracing::info!("shutdown: reporting NOT_SERVING"),
            (_, Some(Stopped::Event(cause))) => tracing::warn!(%cause, "shutting down: reporting NOT_SERVING"),
            (Some(Err(error)), None) => tracing::error!(%error, "the gRPC server failed; shutting down"),
            (_, None) => tracing::error!("the gRPC server stopped accepting connections; shutting down"),
        }
        set_health(&reporter, &health_names, ServingStatus::NotServing).await;
        if served.is_none() {
            // Still accepting, so a balancer's probe on a new connection is answered NOT_SERVING rather
            // than refused or left hanging.
            tokio::select! {
                result = &mut serving => served = Some(result),
                () = tokio::time::sleep(Duration::from_millis(config.shutdown_delay_ms)) => {}
            }
        }

        tracing::info!("shutdown: no longer accepting; draining open calls");
        drain.cancel();
        if served.is_none() {
            match tokio::time::timeout(Duration::from_secs(config.drain_timeout_secs), &mut serving).await {
                Ok(result) => served = Some(result),
                Err(_) => tracing::warn!(
                    open_connections = connections.open(),
                    drain_timeout_secs = config.drain_timeout_secs,
                    "shutdown: connections still open after the drain timeout are cut, with their calls"
                ),
            }
        }
        let still_open = connections.cut(CUT_WAIT).await;
        if still_open > 0 {
            tracing::warn!(still_open, "shutdown: cut connections not yet closed; flushing anyway");
        }

        for step in flush_steps {
            tracing::info!(deadline_ms = step.deadline.as_millis() as u64, "shutdown: flushing {}", step.what);
            match tokio::time::timeout(step.deadline, (step.flush)(step.deadline)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "shutdown: flushing {} incomplete", step.what),
                Err(_) => tracing::warn!(
                    deadline_ms = step.deadline.as_millis() as u64,
                    "shutdown: flushing {} did not finish before its deadline",
                    step.what
                ),
            }
        }
        tracing::info!("shutdown: server stopped");

        match (served, stopped) {
            (Some(Err(error)), _) => Err(error.into()),
            (_, Some(stopped)) => Ok(stopped),
            (_, None) => Err(GrpcServerError::EndedEarly),
        }
    }
}

/// Keeps health following readiness: every `interval`, every check runs (in order, up to the first
/// failure); a change is logged once and reported for the whole server and each of `names`. Runs until
/// dropped.
async fn follow_readiness(
    reporter: &HealthReporter,
    names: &[&str],
    interval: Duration,
    checks: &mut [ReadinessCheck<'_>],
) -> Infallible {
    let mut was_ready = None;
    loop {
        let readiness = check_all(checks).await;
        let ready = readiness.is_ok();
        if was_ready != Some(ready) {
            match &readiness {
                Ok(()) => tracing::info!(services = ?names, "ready: backends reachable"),
                Err(reason) => tracing::warn!(%reason, "not ready"),
            }
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            set_health(reporter, names, status).await;
            was_ready = Some(ready);
        }
        tokio::time::sleep(interval).await;
    }
}

/// `Ok` if every check passes, else the first failure's reason.
async fn check_all(checks: &mut [ReadinessCheck<'_>]) -> Result<(), String> {
    for check in checks {
        check().await?;
    }
    Ok(())
}
