//! The HTTP server: authentication, limits, dispatch to an [`RpcHandler`], graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{AuthConfig, CookieFile, Credentials};
use crate::error::{Error, RpcError, codes};
use crate::handler::{BoxedCall, RpcHandler};
use crate::params::Params;
use crate::protocol::{Reply, Request, Version, http_status_for_error, parse_request};
use crate::stats::{HttpEvent, RpcStats, StatsSnapshot};

/// Default largest request body: generous for a `sendrawtransaction` of a maximal transaction or
/// a large batch, small enough that a burst of bodies cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default largest number of requests in one batch.
pub const DEFAULT_MAX_BATCH_LEN: usize = 1_000;
/// Default number of HTTP requests executed at once (Core's `-rpcthreads` before v28).
pub const DEFAULT_WORKER_COUNT: usize = 4;
/// Default number of requests that may wait for a worker before we answer 503 (Core's
/// `-rpcworkqueue`).
pub const DEFAULT_WORK_QUEUE_DEPTH: usize = 16;
/// Default number of open connections; further clients wait in the kernel's accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Delay before answering bad credentials, as in Core, to slow down password guessing.
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_millis(250);
/// Default limit for receiving a request's headers and body (Core's `-rpcservertimeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time in-flight requests get to finish at shutdown before connections are cut.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (usually out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How to run the server. Build with [`ServerConfig::new`] and adjust fields as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen. Loopback by default: the RPC has no TLS, and Core likewise only binds
    /// elsewhere when told to.
    pub bind: SocketAddr,
    /// Cookie or user/password.
    pub auth: AuthConfig,
    /// Larger bodies get HTTP 413.
    pub max_body_bytes: usize,
    /// Larger batches are rejected whole with `RPC_INVALID_REQUEST` and HTTP 400.
    pub max_batch_len: usize,
    /// HTTP requests executed at once; a batch counts as one and runs its calls in order.
    pub worker_count: usize,
    /// Requests allowed to wait for a worker; beyond that the answer is HTTP 503.
    pub work_queue_depth: usize,
    /// Connections served at once; further connections are not accepted until one closes.
    pub max_connections: usize,
    /// Wait before answering a request with missing or wrong credentials.
    pub auth_failure_delay: Duration,
    /// Time allowed to receive a request's headers, and again its body.
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl ServerConfig {
    /// Defaults, listening on `127.0.0.1:port` (port 0 picks a free one).
    pub fn new(port: u16, auth: AuthConfig) -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            auth,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_len: DEFAULT_MAX_BATCH_LEN,
            worker_count: DEFAULT_WORKER_COUNT,
            work_queue_depth: DEFAULT_WORK_QUEUE_DEPTH,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth_failure_delay: DEFAULT_AUTH_FAILURE_DELAY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let limits = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_batch_len", self.max_batch_len),
            ("worker_count", self.worker_count),
            ("max_connections", self.max_connections),
        ];
        for (name, value) in limits {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        let admitted = self.worker_count.checked_add(self.work_queue_depth);
        if admitted.is_none_or(|total| total > Semaphore::MAX_PERMITS)
            || self.max_connections > Semaphore::MAX_PERMITS
        {
            return Err(Error::Config("concurrency limits are too large".into()));
        }
        Ok(())
    }
}

/// Stops a running server from anywhere (a signal handler, the `stop` RPC method).
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl ShutdownTrigger {
    /// Asks the server to stop: it accepts no new connections, lets in-flight requests finish
    /// (up to [`ServerConfig::shutdown_timeout`]), then deletes the cookie.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// A running server. Dropping it also stops it, so a forgotten handle cannot leak a listener.
#[must_use = "dropping the server stops it"]
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    stats: Arc<RpcStats>,
    cookie_path: Option<PathBuf>,
    trigger: ShutdownTrigger,
    admission: Arc<Semaphore>,
    admission_capacity: usize,
    task: Option<JoinHandle<()>>,
}

impl RpcServer {
    /// Binds, writes the cookie (if cookie auth), and starts serving `handler` in the background.
    ///
    /// Must be called inside a tokio runtime with the `time` and `net` drivers enabled.
    pub async fn start<H: RpcHandler>(config: ServerConfig, handler: H) -> Result<Self, Error> {
        config.validate()?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        // After binding, so a failed start leaves no cookie that looks like a running node's.
        let (cookie, credentials) = match &config.auth {
            AuthConfig::Cookie { dir } => {
                let (cookie, credentials) = CookieFile::create(dir)?;
                (Some(cookie), credentials)
            }
            AuthConfig::UserPassword { user, password } => {
                (None, Credentials::new(user, password)?)
            }
        };
        let cookie_path = cookie.as_ref().map(|cookie| cookie.path().to_owned());
        let stats = Arc::new(RpcStats::default());
        let admission_capacity = config.worker_count + config.work_queue_depth;
        let admission = Arc::new(Semaphore::new(admission_capacity));
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            credentials,
            stats: Arc::clone(&stats),
            admission: Arc::clone(&admission),
            workers: Semaphore::new(config.worker_count),
            max_body_bytes: config.max_body_bytes,
            max_batch_len: config.max_batch_len,
            auth_failure_delay: config.auth_failure_delay,
            request_timeout: config.request_timeout,
        });
        let (sender, receiver) = watch::channel(false);
        let task = tokio::spawn(accept_loop(AcceptLoop {
            listener,
            shared,
            stop: receiver,
            connection_limit: Arc::new(Semaphore::new(config.max_connections)),
            request_timeout: config.request_timeout,
            shutdown_timeout: config.shutdown_timeout,
            cookie,
        }));
        Ok(Self {
            local_addr,
            stats,
            cookie_path,
            trigger: ShutdownTrigger(Arc::new(sender)),
            admission,
            admission_capacity,
            task: Some(task),
        })
    }

    /// Like [`RpcServer::start`], and also stops when `shutdown` completes: pass the daemon's
    /// signal handler or a cancellation token's future.
    pub async fn start_with_shutdown<H, F>(
        config: ServerConfig,
        handler: H,
        shutdown: F,
    ) -> Result<Self, Error>
    where
        H: RpcHandler,
        F: Future<Output = ()> + Send + 'static,
    {
        let server = Self::start(config, handler).await?;
        let trigger = server.shutdown_trigger();
        let mut stop = trigger.0.subscribe();
        // Ends with the server either way, so it never outlives it.
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => trigger.trigger(),
                () = stopped(&mut stop) => {}
            }
        });
        Ok(server)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The cookie file, when cookie authentication is in use.
    pub fn cookie_path(&self) -> Option<&Path> {
        self.cookie_path.as_deref()
    }

    /// A copy of the request counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Requests executing or waiting for a worker right now (a gauge for metrics).
    pub fn requests_in_progress(&self) -> usize {
        self.admission_capacity - self.admission.available_permits()
    }

    /// A handle that can stop the server from elsewhere.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Stops the server and waits until in-flight requests have finished (or the shutdown
    /// timeout cut them off) and the cookie file is gone.
    pub async fn shutdown(mut self) {
        self.trigger.trigger();
        self.wait().await;
    }

    /// Waits until the server has stopped, however the stop was triggered.
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.take() {
            // The loop itself does not panic; a JoinError could only be a runtime shutdown.
            let _ = task.await;
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

struct AcceptLoop<H> {
    listener: TcpListener,
    shared: Arc<Shared<H>>,
    stop: watch::Receiver<bool>,
    connection_limit: Arc<Semaphore>,
    request_timeout: Duration,
    shutdown_timeout: Duration,
    cookie: Option<CookieFile>,
}

/// Resolves once a stop is requested or every trigger is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn accept_loop<H: RpcHandler>(mut state: AcceptLoop<H>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&state.connection_limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut state.stop) => break,
        };
        let stream = tokio::select! {
            accepted = state.listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut state.stop) => break,
        };
        connections.spawn(serve_connection(
            stream,
            Arc::clone(&state.shared),
            state.stop.clone(),
            permit,
            state.request_timeout,
        ));
    }
    drop(state.listener);
    // Every connection watches the same signal and is finishing its in-flight request.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(state.shutdown_timeout, drain)
        .await
        .is_err()
    {
        connections.shutdown().await;
    }
    drop(state.cookie);
}

async fn serve_connection<H: RpcHandler>(
    stream: TcpStream,
    shared: Arc<Shared<H>>,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    request_timeout: Duration,
) {
    // Replies are small and written at once; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(shared.serve(request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopped(&mut stop) => {}
    }
    // Finishes the request in progress, if any, then closes instead of keeping alive.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

type HttpResponse = hyper::Response<Full<Bytes>>;

/// A batch element whose call has started.
struct StartedCall {
    /// The version and id to answer with; `None` for a notification.
    reply_to: Option<(Version, Option<Value>)>,
    outcome: BoxedCall,
}

struct Shared<H> {
    handler: Arc<H>,
    credentials: Credentials,
    stats: Arc<RpcStats>,
    /// Requests executing or waiting: `worker_count + work_queue_depth` permits.
    admission: Arc<Semaphore>,
    /// Requests executing: `worker_count` permits.
    workers: Semaphore,
    max_body_bytes: usize,
    max_batch_len: usize,
    auth_failure_delay: Duration,
    request_timeout: Duration,
}

impl<H: RpcHandler> Shared<H> {
    async fn serve(self: Arc<Self>, request: hyper::Request<Incoming>) -> HttpResponse {
        self.stats.count(HttpEvent::Request);
        if request.method() != Method::POST {
            return text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "JSONRPC server handles only POST requests",
            );
        }
        let authorized = request
            .headers()
            .get(AUTHORIZATION)
            .is_some_and(|header| self.credentials.check_header(header.as_bytes()));
        if !authorized {
            self.stats.count(HttpEvent::Unauthorized);
            tokio::time::sleep(self.auth_failure_delay).await;
            let mut response = empty_response(StatusCode::UNAUTHORIZED);
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"jsonrpc\""),
            );
            return response;
        }
        let declared_length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > self.max_body_bytes as u64) {
            return self.body_too_large();
        }
        // Admission comes before reading the body so that waiting requests, and their bodies in
        // memory, are bounded by the queue depth.
        let Ok(admitted) = Arc::clone(&self.admission).try_acquire_owned() else {
            self.stats.count(HttpEvent::Busy);
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "Work queue depth exceeded");
        };
        let body = Limited::new(request.into_body(), self.max_body_bytes).collect();
        let body = match tokio::time::timeout(self.request_timeout, body).await {
            Err(_) => return text_response(StatusCode::REQUEST_TIMEOUT, "Request body timed out"),
            Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return self.body_too_large();
            }
            Ok(Err(_)) => {
                return text_response(StatusCode::BAD_REQUEST, "Cannot read the request body");
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        // Its own task, so a client that hangs up cancels neither half-done work nor releases
        // its worker slot while the work still runs.
        let shared = Arc::clone(&self);
        let work = tokio::spawn(async move {
            let _admitted = admitted;
            let _worker = shared.workers.acquire().await;
            shared.dispatch(&body).await
        });
        work.await
            .unwrap_or_else(|_| text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"))
    }

    fn body_too_large(&self) -> HttpResponse {
        self.stats.count(HttpEvent::BodyTooLarge);
        text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Request body exceeds {} bytes", self.max_body_bytes),
        )
    }

    fn parse_error(&self, message: &str) -> HttpResponse {
        self.stats.count(HttpEvent::ParseError);
        let error = RpcError::new(codes::RPC_PARSE_ERROR, message);
        json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Reply::new(Version::Legacy, None, Err(error)),
        )
    }

    async fn dispatch(&self, body: &[u8]) -> HttpResponse {
        match serde_json::from_slice::<Value>(body) {
            Err(_) => self.parse_error("Parse error"),
            Ok(request @ Value::Object(_)) => self.single(request).await,
            Ok(Value::Array(requests)) => self.batch(requests).await,
            Ok(_) => self.parse_error("Top-level object parse error"),
        }
    }

    /// Status as in Core: 1.x failures map their code to 400/404/500 and 2.0 replies are
    /// 200, except that a structurally invalid request is 400 in either version.
    async fn single(&self, request: Value) -> HttpResponse {
        let request = match parse_request(request) {
            Ok(request) => request,
            Err(rejected) => {
                self.stats.count(HttpEvent::InvalidRequest);
                let status = http_status(http_status_for_error(rejected.error.code));
                let reply = Reply::new(rejected.version, rejected.id, Err(rejected.error));
                return json_response(status, &reply);
            }
        };
        let notification = request.is_notification();
        let outcome = self.execute(request.method, request.params).await;
        let status = match (&outcome, request.version) {
            (Err(error), Version::Legacy) => http_status(http_status_for_error(error.code)),
            _ => StatusCode::OK,
        };
        if notification {
            return empty_response(StatusCode::NO_CONTENT);
        }
        json_response(status, &Reply::new(request.version, request.id, outcome))
    }

    /// Calls run one after another, in order, except that consecutive calls to a method the
    /// handler marks [`RpcHandler::concurrent_in_batch`] are all started before the first is
    /// awaited. Each failure becomes that element's reply and the HTTP status stays 200, as in
    /// Core.
    async fn batch(&self, requests: Vec<Value>) -> HttpResponse {
        if requests.len() > self.max_batch_len {
            self.stats.count(HttpEvent::InvalidRequest);
            let error = RpcError::new(
                codes::RPC_INVALID_REQUEST,
                format!(
                    "Batch of {} requests exceeds the limit of {}",
                    requests.len(),
                    self.max_batch_len
                ),
            );
            return json_response(
                StatusCode::BAD_REQUEST,
                &Reply::new(Version::Legacy, None, Err(error)),
            );
        }
        let was_empty = requests.is_empty();
        let mut replies = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().map(parse_request).peekable();
        while let Some(parsed) = requests.next() {
            let request = match parsed {
                Err(rejected) => {
                    self.stats.count(HttpEvent::InvalidRequest);
                    replies.push(Reply::new(
                        rejected.version,
                        rejected.id,
                        Err(rejected.error),
                    ));
                    continue;
                }
                Ok(request) => request,
            };
            let method = request.method.clone();
            let concurrent = self.handler.concurrent_in_batch(&method);
            let mut started = vec![self.start(request)];
            while concurrent
                && let Some(Ok(next)) =
                    requests.next_if(|next| matches!(next, Ok(next) if next.method == method))
            {
                started.push(self.start(next));
            }
            for call in started {
                let outcome = call.outcome.await;
                if let Some((version, id)) = call.reply_to {
                    replies.push(Reply::new(version, id, outcome));
                }
            }
        }
        // An empty batch still gets `[]`: old clients that send one expect a body (Core does
        // the same); a batch of only notifications gets nothing.
        if replies.is_empty() && !was_empty {
            return empty_response(StatusCode::NO_CONTENT);
        }
        json_response(StatusCode::OK, &replies)
    }

    async fn execute(&self, method: String, params: Params) -> Result<Value, RpcError> {
        self.spawn_call(method, params).await
    }

    /// Starts a batch element's call now; its outcome is awaited later.
    fn start(&self, request: Request) -> StartedCall {
        let reply_to = (!request.is_notification()).then_some((request.version, request.id));
        StartedCall {
            reply_to,
            outcome: Box::pin(self.spawn_call(request.method, request.params)),
        }
    }

    /// Runs the call in a task spawned before this returns; the future yields its outcome.
    fn spawn_call(
        &self,
        method: String,
        params: Params,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send + 'static {
        let started = Instant::now();
        let handler = Arc::clone(&self.handler);
        let stats = Arc::clone(&self.stats);
        let name = method.clone();
        // A task of its own turns a panicking method into an error reply.
        let task = tokio::spawn(async move { handler.call(&name, params).await });
        async move {
            let outcome = task
                .await
                .unwrap_or_else(|_| Err(RpcError::internal("Internal error: method panicked")));
            let known =
                !matches!(&outcome, Err(error) if error.code == codes::RPC_METHOD_NOT_FOUND);
            stats.record_call(&method, known, outcome.is_err(), started.elapsed());
            outcome
        }
    }
}

fn http_status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn empty_response(status: StatusCode) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn text_response(status: StatusCode, text: &str) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A JSON reply with exactly `application/json` as content type: python-bitcoinrpc compares the
/// header verbatim and rejects `application/json; charset=utf-8`.
fn json_response(status: StatusCode, reply: &impl Serialize) -> HttpResponse {
    let Ok(mut body) = serde_json::to_vec(reply) else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "Cannot encode the reply");
    };
    body.push(b'\n');
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
