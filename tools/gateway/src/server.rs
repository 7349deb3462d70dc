//! The I/O shell around [`Transport`]: one UDP socket, the upstream HTTP pool, timers, the
//! metrics endpoint and graceful shutdown. All decisions are the core's.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::link::{Inbound, Link};
use crate::metrics::Metrics;
use crate::store::{PostgresStore, SealingKey, SqliteStore, StateStore, StoreError};
use crate::translate::UpstreamOutcome;
use crate::transport::{Action, ForwardId, Transport};
use crate::upstream::{Upstream, UpstreamError};

/// The gateway could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The CoAP socket could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// The metrics endpoint's socket could not be bound.
    MetricsBind(SocketAddr, std::io::Error),
    /// The homeserver URL or TLS setup is unusable.
    Upstream(UpstreamError),
    /// The state file (`--state`) cannot be used.
    State(StoreError),
}

impl core::fmt::Display for ServerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Bind(addr, e) => {
                write!(f, "could not listen on {addr}: {e}")?;
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    f.write_str(" (another jeton-gateway may be running there: stop it, or give another address with --listen)")?;
                }
                Ok(())
            }
            Self::MetricsBind(addr, e) => write!(
                f,
                "could not listen on {addr} for the metrics endpoint: {e} (give another address with --metrics-listen ADDR, or turn the endpoint off with --metrics-listen off)"
            ),
            Self::Upstream(e) => write!(f, "the homeserver client could not be set up: {e}"),
            Self::State(e) => write!(f, "the gateway state could not be opened: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// A store, and where it is for the log.
type OpenedStore = (Box<dyn StateStore>, String);

/// The store the configuration names, and where it is for the log; `None`: contexts in RAM.
fn open_store(config: &Config) -> Result<Option<OpenedStore>, StoreError> {
    let Some(credentials) = &config.link else {
        return Ok(None);
    };
    let key = SealingKey::from_identity(credentials.identity.private_key());
    if let Some(url) = &config.database {
        let store = PostgresStore::connect(url, key)?;
        let place = store.name().to_owned();
        return Ok(Some((Box::new(store), place)));
    }
    match &config.state {
        Some(path) => {
            let store = SqliteStore::open(path, key)?;
            Ok(Some((Box::new(store), path.display().to_string())))
        }
        None => Ok(None),
    }
}

/// Runs the gateway until `shutdown` resolves, then drains in-flight requests (at most
/// `config.shutdown_grace`) and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let (_no_reloads, reloads) = mpsc::channel(1);
    run_with_reloads(config, shutdown, reloads).await
}

/// [`run`], reading the authorised tokens file again at each message on `reloads` (the
/// binary sends one per SIGHUP).
pub async fn run_with_reloads(
    config: Config,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), ServerError> {
    let metrics = Metrics::default();
    let (upstream, socket, local) = bind(&config, &metrics).await?;
    let mut link = open_link(&config, &metrics, &socket).await?;
    tracing::info!(listen = %local, homeserver = %config.homeserver, "gateway listening");
    let mut core = new_core(&config, &metrics, &mut link);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(ForwardId, UpstreamOutcome)>();
    let mut tasks: HashMap<ForwardId, AbortHandle> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    let mut drain_deadline: Option<Instant> = None;
    tokio::pin!(shutdown);

    loop {
        let timer = core.next_timer().map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            Instant::from_std,
        );
        let actions = tokio::select! {
            received = socket.recv_from(&mut buf) => on_received(received, &buf, &mut link, &mut core, &socket).await,
            Some((id, outcome)) = done_rx.recv() => {
                tasks.remove(&id);
                core.on_upstream(id, outcome, std::time::Instant::now())
            }
            () = tokio::time::sleep_until(timer) => core.on_timer(std::time::Instant::now()),
            Some(()) = reloads.recv() => {
                reload_tokens(config.link_tokens_file.as_deref(), &mut link);
                Vec::new()
            }
            () = &mut shutdown, if drain_deadline.is_none() => {
                tracing::info!(in_flight = core.client_requests_in_flight(), "shutting down: draining in-flight requests");
                drain_deadline = Some(Instant::now() + config.shutdown_grace);
                metrics.ready.set(0);
                core.begin_drain()
            }
        };
        perform(actions, &mut link, &socket, &upstream, &done_tx, &mut tasks).await;
        for (id, record) in core.take_sticky_changes() {
            link.store_sticky(id, &record);
        }
        if drain_deadline.is_some_and(|deadline| stopped(&core, deadline)) {
            break;
        }
    }
    for (_, handle) in tasks {
        handle.abort();
    }
    Ok(())
}

/// Sets up the homeserver client and binds the CoAP socket (returned with its bound address)
/// and, if configured, the metrics endpoint; the gateway is ready from here on.
async fn bind(
    config: &Config,
    metrics: &Metrics,
) -> Result<(Upstream, UdpSocket, SocketAddr), ServerError> {
    let upstream = Upstream::new(
        &config.homeserver,
        metrics.clone(),
        config.limits.max_response_body,
    )
    .map_err(ServerError::Upstream)?;
    let socket = UdpSocket::bind(config.listen)
        .await
        .map_err(|e| ServerError::Bind(config.listen, e))?;
    let local = socket
        .local_addr()
        .map_err(|e| ServerError::Bind(config.listen, e))?;
    metrics.ready.set(1);
    if let Some(addr) = config.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServerError::MetricsBind(addr, e))?;
        tracing::info!(%addr, "metrics endpoint listening");
        tokio::spawn(serve_metrics(listener, metrics.clone()));
    }
    Ok((upstream, socket, local))
}

/// The protected link, with its contexts restored from the store if there is one; the
/// observations those contexts had cannot be resumed, so their clients are told now.
async fn open_link(
    config: &Config,
    metrics: &Metrics,
    socket: &UdpSocket,
) -> Result<Link, ServerError> {
    let mut link = Link::new(config.link.clone(), config.compat_plain_msc3079)
        .with_sources(config.sources.clone())
        .with_metrics(metrics.clone());
    if let Some((store, place)) = open_store(config).map_err(ServerError::State)? {
        link = link.with_store(store).map_err(ServerError::State)?;
        tracing::info!(state = %place, restored = link.context_count(), "OSCORE contexts kept durably");
        for (peer, datagram) in link.end_restored_observations() {
            if let Err(e) = socket.send_to(&datagram, peer).await {
                tracing::debug!(%peer, error = %e, "udp send failed");
            }
        }
    }
    Ok(link)
}

/// The transport core, given the sticky access tokens the link restored when contexts are
/// kept durably.
fn new_core(config: &Config, metrics: &Metrics, link: &mut Link) -> Transport {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut core = Transport::new(
        config.limits.clone(),
        metrics.clone(),
        Instant::now().into_std(),
    )
    .with_seed(seed)
    .with_sources(config.sources.clone());
    if config.state.is_some() || config.database.is_some() {
        core = core.with_durable_sticky();
        for restored in link.take_restored_sticky() {
            let access_token = restored.access_token.as_deref().map(Vec::as_slice);
            let now = Instant::now().into_std();
            core.restore_sticky(restored.context, access_token, &restored.record, now);
        }
    }
    core
}

/// Passes a received datagram through the link to the core; what the link answers itself
/// goes straight back to the peer.
async fn on_received(
    received: std::io::Result<(usize, SocketAddr)>,
    buf: &[u8],
    link: &mut Link,
    core: &mut Transport,
    socket: &UdpSocket,
) -> Vec<Action> {
    match received {
        Ok((n, peer)) => match link.on_datagram(
            peer,
            buf.get(..n).unwrap_or_default(),
            std::time::Instant::now(),
        ) {
            Inbound::Deliver(from, plain) => {
                core.on_datagram(from, &plain, std::time::Instant::now())
            }
            Inbound::Reply(datagram) => {
                // The link's own answers (EDHOC, refusals) bypass its protection step.
                if let Err(e) = socket.send_to(&datagram, peer).await {
                    tracing::debug!(%peer, error = %e, "udp send failed");
                }
                Vec::new()
            }
            Inbound::Drop => Vec::new(),
        },
        Err(e) => {
            // ICMP port unreachable from a vanished peer shows up here on some systems.
            tracing::debug!(error = %e, "udp receive error");
            Vec::new()
        }
    }
}

/// Carries out the core's actions: datagrams out through the link, requests to the
/// homeserver (each on its own task, which reports on `done` and stays abortable through
/// `tasks` until then), cancellations of those no longer wanted.
async fn perform(
    actions: Vec<Action>,
    link: &mut Link,
    socket: &UdpSocket,
    upstream: &Upstream,
    done: &mpsc::UnboundedSender<(ForwardId, UpstreamOutcome)>,
    tasks: &mut HashMap<ForwardId, AbortHandle>,
) {
    for action in actions {
        match action {
            Action::Send { peer, datagram } => {
                let Some((peer, datagram)) = link.on_send(peer, datagram) else {
                    continue;
                };
                if let Err(e) = socket.send_to(&datagram, peer).await {
                    tracing::debug!(%peer, error = %e, "udp send failed");
                }
            }
            Action::Forward { id, request } => {
                let upstream = upstream.clone();
                let done = done.clone();
                let handle = tokio::spawn(async move {
                    let outcome = upstream.send(request).await;
                    let _ = done.send((id, outcome));
                });
                tasks.insert(id, handle.abort_handle());
            }
            Action::Cancel { id } => {
                if let Some(handle) = tasks.remove(&id) {
                    handle.abort();
                }
            }
        }
    }
}

/// Whether a drain that runs until `deadline` is over: nothing left in flight or
/// unacknowledged, or out of time.
fn stopped(core: &Transport, deadline: Instant) -> bool {
    let drained = core.client_requests_in_flight() == 0 && core.unacknowledged_responses() == 0;
    if drained || Instant::now() >= deadline {
        tracing::info!(drained, "gateway stopped");
        return true;
    }
    false
}

/// Reads the authorised tokens file again (SIGHUP) and says in the log what changed; a file
/// that cannot be read leaves the tokens as they were.
fn reload_tokens(file: Option<&std::path::Path>, link: &mut Link) {
    let Some(file) = file else {
        tracing::warn!("SIGHUP: nothing to reload, the protected link is off (no --link-tokens)");
        return;
    };
    match crate::link_credentials::LinkCredentials::load_tokens(file) {
        Ok(tokens) => {
            let listed = tokens.len();
            let revoked = link.replace_tokens(tokens);
            tracing::info!(
                file = %file.display(),
                tokens = listed,
                revoked = ?revoked,
                "SIGHUP: reloaded the authorised tokens"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP: kept the authorised tokens as they were");
        }
    }
}

/// Serves `/metrics` and `/healthz` (200 while the gateway takes requests, 503 once it drains).
async fn serve_metrics(listener: TcpListener, metrics: Metrics) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let registry = Arc::new(metrics.registry());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (registry, ready) = (registry.clone(), metrics.ready.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (registry, ready) = (registry.clone(), ready.clone());
                async move {
                    match request.uri().path() {
                        "/metrics" => hyper::Response::builder()
                            .header(
                                http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(bytes::Bytes::from(Metrics::render(&registry)))),
                        "/healthz" if ready.get() == 1 => hyper::Response::builder()
                            .body(Full::new(bytes::Bytes::from_static(b"ready\n"))),
                        "/healthz" => hyper::Response::builder()
                            .status(503)
                            .body(Full::new(bytes::Bytes::from_static(b"draining\n"))),
                        _ => hyper::Response::builder()
                            .status(404)
                            .body(Full::new(bytes::Bytes::from_static(b"see /metrics\n"))),
                    }
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
