//! The two listeners: HTTPS (`POST /mutate`) for the API server and plain HTTP for probes and
//! metrics (`/healthz`, `/readyz`, `/metrics`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::admission;
use crate::config::{Config, Limits};
use crate::error::{Error, Result};
use crate::metrics::{ErrorKind, Metrics};
use crate::settings::InjectionDefaults;
use crate::tls::{self, CertStore};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Bodies above this are decoded on the blocking pool so a huge object cannot stall the reactor.
const OFFLOAD_BYTES: usize = 256 * 1024;
/// HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 256;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct AppState {
    defaults: InjectionDefaults,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

/// A webhook with its certificate loaded and both listeners bound, not yet serving.
#[derive(Debug)]
pub struct Server {
    config: Config,
    store: Arc<CertStore>,
    tls_config: Arc<rustls::ServerConfig>,
    tls_listener: TcpListener,
    health_listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Loads the certificate and binds the listeners; fails with a clear message if either fails.
    pub async fn bind(config: Config) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let store = Arc::new(CertStore::load(config.tls.clone(), Arc::clone(&provider))?);
        let tls_config = Arc::new(tls::server_config(Arc::clone(&store), provider)?);
        let tls_listener = bind(config.listen_addr).await?;
        let health_listener = bind(config.health_addr).await?;
        let state = Arc::new(AppState {
            defaults: config.injection.clone(),
            metrics: Arc::new(Metrics::new()),
            ready: AtomicBool::new(false),
        });
        Ok(Self {
            config,
            store,
            tls_config,
            tls_listener,
            health_listener,
            state,
        })
    }

    /// The bound HTTPS address (useful with port 0).
    pub fn tls_addr(&self) -> Result<SocketAddr> {
        Ok(self.tls_listener.local_addr()?)
    }

    /// The bound health address.
    pub fn health_addr(&self) -> Result<SocketAddr> {
        Ok(self.health_listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then stops accepting, reports not ready, lets in-flight
    /// requests finish (up to the shutdown timeout) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Self {
            config,
            store,
            tls_config,
            tls_listener,
            health_listener,
            state,
        } = self;
        let acceptor = TlsAcceptor::from(tls_config);
        let bound = (display_addr(&tls_listener), display_addr(&health_listener));
        let (stop, stopped) = watch::channel(false);
        let watcher = tokio::spawn(tls::watch(
            store,
            config.cert_reload_interval,
            Arc::clone(&state.metrics),
            stopped.clone(),
        ));
        let health = tokio::spawn(serve_health(health_listener, Arc::clone(&state), stopped));

        state.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            listen = %bound.0, health = %bound.1, image = %config.injection.image,
            "obi-webhook serving"
        );
        let router = admission_router(Arc::clone(&state), &config.limits);
        let served = serve_tls(
            tls_listener,
            acceptor,
            router,
            &config.limits,
            shutdown,
            &state,
        )
        .await;

        // Shutdown is already under way; a closed channel only means the tasks are gone.
        let _ = stop.send(true);
        let _ = watcher.await;
        match health.await {
            Ok(Err(error)) => tracing::warn!(%error, "health server failed"),
            Err(error) => tracing::warn!(%error, "health server task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("obi-webhook stopped");
        served
    }
}

/// The address actually bound (it differs from the configured one for port 0).
fn display_addr(listener: &TcpListener) -> String {
    listener.local_addr().map_or_else(
        |error| format!("unknown ({error})"),
        |addr| addr.to_string(),
    )
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Completes on SIGTERM or SIGINT. Registering the handlers can fail, hence the outer `Result`.
pub fn termination_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}

fn admission_router(state: Arc<AppState>, limits: &Limits) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.metrics.rejected(ErrorKind::Body, started.elapsed());
            // Too large is the client's mistake worth a warning; anything else is a client that
            // went away mid-body (e.g. the API server giving up), which is routine.
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                tracing::warn!(error = %rejection.body_text(), "admission request body too large");
            } else {
                tracing::debug!(error = %rejection.body_text(), "admission request body not received");
            }
            return rejection.into_response();
        }
    };
    let reviewed = if body.len() > OFFLOAD_BYTES {
        let task_state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || admission::review(&body, &task_state.defaults))
            .await
            .unwrap_or_else(|error| Err(Error::Encode(error.to_string())))
    } else {
        admission::review(&body, &state.defaults)
    };
    let elapsed = started.elapsed();
    match reviewed {
        Ok(reviewed) => {
            let plan = &reviewed.plan;
            let patched = !plan.patch.0.is_empty();
            state
                .metrics
                .review(reviewed.operation.as_str(), plan.outcome, patched, elapsed);
            tracing::debug!(
                uid = %reviewed.uid, operation = reviewed.operation.as_str(), namespace = %reviewed.namespace,
                name = %reviewed.name, dry_run = reviewed.dry_run, outcome = ?plan.outcome, patched,
                warnings = ?plan.warnings, elapsed_us = elapsed.as_micros() as u64, "admission reviewed"
            );
            if patched {
                tracing::info!(
                    uid = %reviewed.uid, namespace = %reviewed.namespace, name = %reviewed.name,
                    dry_run = reviewed.dry_run, outcome = plan.outcome.label(), "deployment patched"
                );
            }
            ([(header::CONTENT_TYPE, "application/json")], reviewed.body).into_response()
        }
        Err(error @ Error::Encode(_)) => {
            state.metrics.rejected(ErrorKind::Encode, elapsed);
            tracing::error!(%error, "admission response not encoded");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
        Err(error) => {
            state.metrics.rejected(ErrorKind::InvalidReview, elapsed);
            tracing::warn!(%error, "invalid admission request");
            (StatusCode::BAD_REQUEST, error.to_string()).into_response()
        }
    }
}

async fn serve_health(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        })
        .await?;
    Ok(())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
        .into_response()
}

/// HTTP/2 connections stay open (PINGs keep them honest). HTTP/1.1 connections serve one request
/// each: hyper's header-read timeout also closes idle keep-alive connections, and that close can
/// race the client's next POST, which Go clients (the API server) do not retry: the webhook call
/// would fail and, with `failurePolicy: Ignore`, the Deployment go uninjected. The API server
/// speaks HTTP/2 unless told not to, so HTTP/1.1 only pays a handshake per request.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    state: &AppState,
) -> Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(http_builder(limits));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            acceptor: acceptor.clone(),
            builder: Arc::clone(&builder),
            router: router.clone(),
            handshake_timeout: limits.header_read_timeout,
            watcher: graceful.watcher(),
            _permit: permit,
        };
        tokio::spawn(connection.serve(stream, peer));
    }

    state.ready.store(false, Ordering::SeqCst);
    drop(listener);
    tracing::info!("no longer accepting connections; finishing in-flight requests");
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?limits.shutdown_timeout, "connections still open after the shutdown timeout");
    }
    Ok(())
}

struct Connection {
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    handshake_timeout: Duration,
    watcher: Watcher,
    /// Held for the connection's lifetime: bounds the number of open connections.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let service = TowerToHyperService::new(self.router);
        let connection = self
            .builder
            .serve_connection(TokioIo::new(tls), service)
            .into_owned();
        if let Err(error) = self.watcher.watch(connection).await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}
