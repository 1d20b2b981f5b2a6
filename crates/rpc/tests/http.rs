//! End-to-end tests over real loopback sockets: a raw HTTP/1.1 client checks the server's wire
//! behaviour byte for byte, and `RpcClient` is checked against the same server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use timecoin_rpc::auth::{COOKIE_USER, basic_authorization};
use timecoin_rpc::{
    AuthConfig, Error, Methods, Params, RpcClient, RpcError, RpcServer, ServerConfig, codes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
/// Bound on every wait for a condition, so a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(10);

/// Lets a test hold `block` calls inside the handler and see when they arrive.
struct Gate {
    open: Semaphore,
    entered: mpsc::UnboundedSender<()>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

fn methods(gate: Arc<Gate>) -> Methods {
    let mut methods = Methods::new();
    methods
        .register("add", "add a ( b )", |params| async move {
            let args = params.bind(&["a", "b"])?;
            let a: u64 = args.required(0)?;
            let b: u64 = args.optional(1)?.unwrap_or(0);
            Ok(json!(a + b))
        })
        .register("echo", "echo ...", |params| async move {
            Ok(match params {
                Params::Positional(values) => Value::Array(values),
                Params::Named(map) => Value::Object(map),
            })
        })
        .register("reject", "reject", |_| async {
            Err(RpcError::new(codes::RPC_VERIFY_REJECTED, "tx rejected"))
        })
        .register_blocking("explode", "explode", |_| panic!("handler bug"))
        .register("block", "block", {
            let gate = Arc::clone(&gate);
            move |_| pass(Arc::clone(&gate))
        })
        .register("block_together", "block_together", move |_| {
            pass(Arc::clone(&gate))
        })
        .concurrent_in_batches("block_together");
    methods
}

/// Waits at the gate, counting the calls waiting there at once.
async fn pass(gate: Arc<Gate>) -> Result<Value, RpcError> {
    let now = gate.running.fetch_add(1, Ordering::SeqCst) + 1;
    gate.max_running.fetch_max(now, Ordering::SeqCst);
    let _ = gate.entered.send(());
    gate.open.acquire().await.expect("gate open").forget();
    gate.running.fetch_sub(1, Ordering::SeqCst);
    Ok(json!("done"))
}

struct Harness {
    server: RpcServer,
    gate: Arc<Gate>,
    entered: mpsc::UnboundedReceiver<()>,
}

impl Harness {
    async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig::new(
            0,
            AuthConfig::UserPassword {
                user: USER.into(),
                password: PASSWORD.into(),
            },
        );
        config.auth_failure_delay = Duration::from_millis(1);
        configure(&mut config);
        let (sender, entered) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate {
            open: Semaphore::new(0),
            entered: sender,
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        });
        let server = RpcServer::start(config, methods(Arc::clone(&gate)))
            .await
            .expect("server starts");
        Self {
            server,
            gate,
            entered,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    async fn post(&self, body: &str) -> HttpReply {
        post(self.addr(), Some(&auth()), body.as_bytes()).await
    }

    async fn wait_until_entered(&mut self) {
        tokio::time::timeout(PATIENCE, self.entered.recv())
            .await
            .expect("a blocked call reached the handler")
            .expect("gate sender alive");
    }

    /// Waits for one more call to reach the gate, lets it through, and returns the reply to
    /// the batch `request` (whose last call that was), checking it is a 200.
    async fn let_one_more_through(
        &mut self,
        request: tokio::task::JoinHandle<HttpReply>,
    ) -> HttpReply {
        self.wait_until_entered().await;
        self.gate.open.add_permits(1);
        let reply = tokio::time::timeout(PATIENCE, request)
            .await
            .expect("the batch is answered")
            .expect("the client task");
        assert_eq!(reply.status, 200);
        reply
    }

    async fn wait_for_in_progress(&self, count: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.server.requests_in_progress() != count {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("requests admitted");
    }
}

fn auth() -> String {
    basic_authorization(USER, PASSWORD)
}

#[derive(Debug)]
struct HttpReply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl HttpReply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// A deliberately dumb HTTP/1.1 client, so the server is checked independently of hyper's
/// client and of `RpcClient`.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> HttpReply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read reply");
        reply
    };
    let reply = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("server answered");
    let split = reply
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("complete HTTP head");
    let headers = String::from_utf8(reply[..split].to_vec()).expect("ASCII head");
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    HttpReply {
        status,
        headers,
        body: reply[split + 4..].to_vec(),
    }
}

async fn post(addr: SocketAddr, authorization: Option<&str>, body: &[u8]) -> HttpReply {
    let auth_line = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth_line}Content-Length: {}\r\n\r\n",
        body.len()
    );
    raw_request(addr, &head, body).await
}

#[tokio::test]
async fn every_version_form_gets_its_reply_shape() {
    let harness = Harness::start(|_| {}).await;
    for request in [
        r#"{"method":"add","params":[2,3],"id":1}"#,
        r#"{"version":"1.1","method":"add","params":[2,3],"id":1}"#,
        r#"{"jsonrpc":"1.0","method":"add","params":[2,3],"id":1}"#,
    ] {
        let reply = harness.post(request).await;
        assert_eq!(reply.status, 200, "{request}");
        // python-bitcoinrpc compares this header verbatim.
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json(), json!({"result": 5, "error": null, "id": 1}));
    }
    let reply = harness
        .post(r#"{"jsonrpc":"2.0","method":"add","params":[2,3],"id":"x"}"#)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"jsonrpc": "2.0", "result": 5, "error": null, "id": "x"})
    );

    // Missing params means no arguments, as in Core.
    let reply = harness.post(r#"{"method":"echo","id":2}"#).await;
    assert_eq!(reply.json()["result"], json!([]));
}

#[tokio::test]
async fn named_and_positional_params_reach_the_same_arguments() {
    let harness = Harness::start(|_| {}).await;
    let named = harness
        .post(r#"{"method":"add","params":{"b":4,"a":1},"id":1}"#)
        .await;
    assert_eq!(named.json()["result"], json!(5));
    let partial = harness
        .post(r#"{"method":"add","params":{"a":7},"id":1}"#)
        .await;
    assert_eq!(partial.json()["result"], json!(7));
    let skipped = harness
        .post(r#"{"method":"add","params":[7,null],"id":1}"#)
        .await;
    assert_eq!(skipped.json()["result"], json!(7));
    let unknown = harness
        .post(r#"{"method":"add","params":{"a":1,"c":2},"id":1}"#)
        .await;
    assert_eq!(unknown.status, 500);
    assert_eq!(
        unknown.json()["error"],
        json!({"code": codes::RPC_INVALID_PARAMETER, "message": "Unknown named parameter c"})
    );
}

#[tokio::test]
async fn method_errors_use_cores_codes_and_statuses() {
    let harness = Harness::start(|_| {}).await;

    let missing = harness.post(r#"{"method":"nosuch","id":9}"#).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": 9})
    );
    let missing_v2 = harness
        .post(r#"{"jsonrpc":"2.0","method":"nosuch","id":9}"#)
        .await;
    assert_eq!(missing_v2.status, 200);
    assert_eq!(
        missing_v2.json(),
        json!({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 9})
    );

    let wrong_type = harness
        .post(r#"{"method":"add","params":["2"],"id":1}"#)
        .await;
    assert_eq!(wrong_type.status, 500);
    assert_eq!(
        wrong_type.json()["error"],
        json!({"code": codes::RPC_TYPE_ERROR,
               "message": "JSON value of type string is not of expected type number"})
    );
    let negative = harness
        .post(r#"{"method":"add","params":[-2],"id":1}"#)
        .await;
    assert_eq!(
        negative.json()["error"]["code"],
        json!(codes::RPC_INVALID_PARAMETER)
    );
    let missing_argument = harness.post(r#"{"method":"add","id":1}"#).await;
    assert_eq!(
        missing_argument.json()["error"]["code"],
        json!(codes::RPC_INVALID_PARAMETER)
    );

    let rejected = harness.post(r#"{"method":"reject","id":1}"#).await;
    assert_eq!(rejected.status, 500);
    assert_eq!(
        rejected.json()["error"],
        json!({"code": codes::RPC_VERIFY_REJECTED, "message": "tx rejected"})
    );
}

#[tokio::test]
async fn malformed_requests_get_json_rpc_errors() {
    let harness = Harness::start(|_| {}).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for body in ["{", "[1,2", "", "\u{0}", "nul", deep.as_str()] {
        let reply = harness.post(body).await;
        assert_eq!(reply.status, 500, "{body:.20}");
        assert_eq!(
            reply.json(),
            json!({"result": null, "error": {"code": -32700, "message": "Parse error"}, "id": null}),
            "{body:.20}"
        );
    }
    let reply = post(harness.addr(), Some(&auth()), &[b'{', 0xff, 0xfe, b'}']).await;
    assert_eq!(reply.json()["error"]["code"], json!(codes::RPC_PARSE_ERROR));

    for body in [r#""text""#, "42", "null", "true"] {
        let reply = harness.post(body).await;
        assert_eq!(reply.status, 500);
        assert_eq!(
            reply.json()["error"],
            json!({"code": -32700, "message": "Top-level object parse error"})
        );
    }
    for (body, message) in [
        (r#"{"id":3}"#, "Missing method"),
        (r#"{"id":3,"method":["add"]}"#, "Method must be a string"),
        (
            r#"{"id":3,"method":"add","params":7}"#,
            "Params must be an array or object",
        ),
        (
            r#"{"id":3,"jsonrpc":"1.5","method":"add"}"#,
            "JSON-RPC version not supported",
        ),
    ] {
        let reply = harness.post(body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(
            reply.json(),
            json!({"result": null, "error": {"code": -32600, "message": message}, "id": 3})
        );
    }
    let invalid_v2 = harness.post(r#"{"jsonrpc":"2.0","id":3}"#).await;
    assert_eq!(invalid_v2.status, 400);
    assert_eq!(
        invalid_v2.json(),
        json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Missing method"}, "id": 3})
    );

    let get = raw_request(
        harness.addr(),
        &format!(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
            auth()
        ),
        b"",
    )
    .await;
    assert_eq!(get.status, 405);

    // The server is still healthy after all of that.
    let reply = harness
        .post(r#"{"method":"add","params":[1],"id":1}"#)
        .await;
    assert_eq!(reply.json()["result"], json!(1));
    let stats = harness.server.stats();
    assert_eq!(stats.http.parse_errors, 11);
    assert_eq!(stats.http.invalid_requests, 5);
}

#[tokio::test]
async fn batches_answer_in_order_each_in_its_own_shape() {
    let harness = Harness::start(|_| {}).await;
    let reply = harness
        .post(
            r#"[
            {"method":"add","params":[1,1],"id":"a"},
            {"jsonrpc":"2.0","method":"add","params":[2,2],"id":"b"},
            {"jsonrpc":"2.0","method":"add","params":[9,9]},
            {"method":"nosuch","id":"c"},
            5,
            {"jsonrpc":"2.0","method":"reject","id":"d"}
        ]"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!([
            {"result": 2, "error": null, "id": "a"},
            {"jsonrpc": "2.0", "result": 4, "error": null, "id": "b"},
            {"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": "c"},
            {"result": null, "error": {"code": -32600, "message": "Invalid Request object"}, "id": null},
            {"jsonrpc": "2.0", "error": {"code": -26, "message": "tx rejected"}, "id": "d"},
        ])
    );
    // The notification ran even though it got no reply.
    assert_eq!(harness.server.stats().methods["add"].calls, 3);

    let empty = harness.post("[]").await;
    assert_eq!((empty.status, empty.json()), (200, json!([])));
    let notifications = harness
        .post(r#"[{"jsonrpc":"2.0","method":"add","params":[1]}]"#)
        .await;
    assert_eq!(notifications.status, 204);
    assert!(notifications.body.is_empty());
    let single_notification = harness
        .post(r#"{"jsonrpc":"2.0","method":"add","params":[1]}"#)
        .await;
    assert_eq!(single_notification.status, 204);
}

#[tokio::test]
async fn calls_marked_concurrent_run_together_in_a_batch_and_still_answer_in_order() {
    let mut harness = Harness::start(|_| {}).await;
    let addr = harness.addr();
    let batch = r#"[
        {"method":"block_together","id":1},
        {"method":"block_together","id":2},
        {"method":"add","params":[1,2],"id":3},
        {"method":"block_together","id":4}
    ]"#;
    let request = tokio::spawn(async move { post(addr, Some(&auth()), batch.as_bytes()).await });
    // The first two are inside the handler at once; the third element (another method) ends
    // the run, so the fourth starts only after them.
    harness.wait_until_entered().await;
    harness.wait_until_entered().await;
    assert_eq!(harness.gate.running.load(Ordering::SeqCst), 2);
    harness.gate.open.add_permits(2);
    let reply = harness.let_one_more_through(request).await;
    assert_eq!(
        reply.json(),
        json!([
            {"result": "done", "error": null, "id": 1},
            {"result": "done", "error": null, "id": 2},
            {"result": 3, "error": null, "id": 3},
            {"result": "done", "error": null, "id": 4},
        ])
    );
    assert_eq!(harness.gate.max_running.load(Ordering::SeqCst), 2);

    // Unmarked, the same calls run one at a time.
    let batch = r#"[{"method":"block","id":1},{"method":"block","id":2}]"#;
    let request = tokio::spawn(async move { post(addr, Some(&auth()), batch.as_bytes()).await });
    harness.gate.max_running.store(0, Ordering::SeqCst);
    harness.wait_until_entered().await;
    harness.gate.open.add_permits(1);
    harness.let_one_more_through(request).await;
    assert_eq!(harness.gate.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn batch_length_is_bounded() {
    let harness = Harness::start(|config| config.max_batch_len = 3).await;
    let call = r#"{"method":"add","params":[1],"id":1}"#;
    let three = harness.post(&format!("[{call},{call},{call}]")).await;
    assert_eq!(three.json().as_array().map(Vec::len), Some(3));
    let four = harness
        .post(&format!("[{call},{call},{call},{call}]"))
        .await;
    assert_eq!(four.status, 400);
    assert_eq!(
        four.json()["error"]["code"],
        json!(codes::RPC_INVALID_REQUEST)
    );
    assert_eq!(harness.server.stats().methods["add"].calls, 3);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let harness = Harness::start(|config| config.max_body_bytes = 1024).await;
    // Declared too large: refused on the headers alone.
    let declared = raw_request(
        harness.addr(),
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\nContent-Length: 100000\r\n\r\n",
            auth()
        ),
        b"",
    )
    .await;
    assert_eq!(declared.status, 413);

    // Chunked, so the length is only known while reading.
    let padding = "x".repeat(2000);
    let body = format!(r#"{{"method":"echo","params":["{padding}"],"id":1}}"#);
    let chunked = raw_request(
        harness.addr(),
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            auth()
        ),
        format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes(),
    )
    .await;
    assert_eq!(chunked.status, 413);

    let fits = harness
        .post(&format!(
            r#"{{"method":"echo","params":["{}"],"id":1}}"#,
            "x".repeat(900)
        ))
        .await;
    assert_eq!(fits.status, 200);
    assert_eq!(harness.server.stats().http.body_too_large, 2);
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401() {
    let harness = Harness::start(|_| {}).await;
    let body = br#"{"method":"add","params":[1],"id":1}"#;
    for authorization in [
        None,
        Some(basic_authorization(USER, "wrong")),
        Some(basic_authorization("mallory", PASSWORD)),
        Some(format!("Bearer {PASSWORD}")),
    ] {
        let reply = post(harness.addr(), authorization.as_deref(), body).await;
        assert_eq!(reply.status, 401, "{authorization:?}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Basic realm="jsonrpc""#)
        );
        assert!(reply.body.is_empty());
    }
    assert_eq!(harness.server.stats().http.unauthorized, 4);
    // Nothing reached the handler.
    assert!(harness.server.stats().methods.is_empty());
    let reply = post(harness.addr(), Some(&auth()), body).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn cookie_is_private_works_and_is_removed_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::start(|config| {
        config.auth = AuthConfig::Cookie {
            dir: dir.path().to_owned(),
        };
    })
    .await;
    let path = harness
        .server
        .cookie_path()
        .expect("cookie auth")
        .to_owned();
    assert_eq!(path, dir.path().join(".cookie"));
    let content = std::fs::read_to_string(&path).unwrap();
    let (user, secret) = content.split_once(':').unwrap();
    assert_eq!(user, COOKIE_USER);
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|byte| byte.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let client = RpcClient::from_cookie(harness.addr(), dir.path()).unwrap();
    assert_eq!(
        client.call("add", json!([20, 22])).await.unwrap(),
        json!(42)
    );
    let wrong = post(
        harness.addr(),
        Some(&basic_authorization(USER, PASSWORD)),
        b"{}",
    )
    .await;
    assert_eq!(wrong.status, 401);

    let addr = harness.addr();
    harness.server.shutdown().await;
    assert!(!path.exists(), "cookie removed at shutdown");
    assert!(matches!(
        RpcClient::from_cookie(addr, dir.path()),
        Err(Error::Cookie { .. })
    ));
}

#[tokio::test]
async fn a_panicking_method_is_an_internal_error_not_a_dead_server() {
    let harness = Harness::start(|_| {}).await;
    let reply = harness.post(r#"{"method":"explode","id":1}"#).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.json()["error"]["code"],
        json!(codes::RPC_INTERNAL_ERROR)
    );
    let reply = harness
        .post(r#"{"method":"add","params":[1],"id":1}"#)
        .await;
    assert_eq!(reply.json()["result"], json!(1));
}

#[tokio::test]
async fn concurrency_is_bounded_and_excess_gets_503() {
    let mut harness = Harness::start(|config| {
        config.worker_count = 1;
        config.work_queue_depth = 1;
    })
    .await;
    let addr = harness.addr();
    let block = r#"{"method":"block","id":1}"#;
    let first = tokio::spawn(async move { post(addr, Some(&auth()), block.as_bytes()).await });
    harness.wait_until_entered().await;
    let second = tokio::spawn(async move { post(addr, Some(&auth()), block.as_bytes()).await });
    harness.wait_for_in_progress(2).await;

    let refused = harness
        .post(r#"{"method":"add","params":[1],"id":1}"#)
        .await;
    assert_eq!(refused.status, 503);
    assert_eq!(harness.server.stats().http.busy, 1);
    // The queued call has not started: only one worker.
    assert_eq!(harness.gate.running.load(Ordering::SeqCst), 1);

    harness.gate.open.add_permits(2);
    for call in [first, second] {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["result"], json!("done"));
    }
    assert_eq!(harness.gate.max_running.load(Ordering::SeqCst), 1);
    harness.wait_for_in_progress(0).await;
    let accepted = harness
        .post(r#"{"method":"add","params":[1],"id":1}"#)
        .await;
    assert_eq!(accepted.status, 200);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let mut harness = Harness::start(|_| {}).await;
    let addr = harness.addr();
    let in_flight =
        tokio::spawn(
            async move { post(addr, Some(&auth()), br#"{"method":"block","id":1}"#).await },
        );
    harness.wait_until_entered().await;

    let Harness { server, gate, .. } = harness;
    let trigger = server.shutdown_trigger();
    let stopping = tokio::spawn(server.shutdown());
    trigger.trigger();
    tokio::time::timeout(PATIENCE, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("listener closed");
    assert!(!stopping.is_finished(), "waits for the in-flight request");

    gate.open.add_permits(1);
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["result"], json!("done"));
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown completes")
        .unwrap();
}

#[tokio::test]
async fn help_lists_the_registered_methods() {
    let harness = Harness::start(|_| {}).await;
    let reply = harness.post(r#"{"method":"help","id":1}"#).await;
    let text = reply.json()["result"].as_str().unwrap().to_owned();
    for line in ["add a ( b )", "echo ...", "reject", "block"] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from {text}"
        );
    }
    let one = harness
        .post(r#"{"method":"help","params":["add"],"id":1}"#)
        .await;
    assert_eq!(one.json()["result"], json!("add a ( b )"));
}

#[tokio::test]
async fn client_round_trips_and_maps_errors() {
    let harness = Harness::start(|_| {}).await;
    let client = RpcClient::new(harness.addr(), USER, PASSWORD);
    assert_eq!(client.call("add", json!([1, 2])).await.unwrap(), json!(3));
    assert_eq!(client.call("add", json!({"a": 5})).await.unwrap(), json!(5));
    assert_eq!(
        client
            .call("echo", json!(["é", {"k": null}]))
            .await
            .unwrap(),
        json!(["é", {"k": null}])
    );

    for (method, params, code) in [
        ("nosuch", json!([]), codes::RPC_METHOD_NOT_FOUND),
        ("add", json!(["1"]), codes::RPC_TYPE_ERROR),
        ("add", json!([]), codes::RPC_INVALID_PARAMETER),
        ("reject", json!([]), codes::RPC_VERIFY_REJECTED),
    ] {
        match client.call(method, params).await {
            Err(Error::Rpc(error)) => assert_eq!(error.code, code, "{method}"),
            other => panic!("{method}: expected an RPC error, got {other:?}"),
        }
    }

    let intruder = RpcClient::new(harness.addr(), USER, "guess");
    assert!(matches!(
        intruder.call("add", json!([1])).await,
        Err(Error::Unauthorized)
    ));

    let stats = harness.server.stats();
    assert_eq!(stats.methods["add"].calls, 4);
    assert_eq!(stats.methods["add"].errors, 2);
    assert_eq!(stats.http.unknown_methods, 1);

    harness.server.shutdown().await;
    assert!(matches!(
        client.call("add", json!([1])).await,
        Err(Error::Connect { .. })
    ));
}

#[tokio::test]
async fn client_times_out_on_a_stuck_call() {
    let harness = Harness::start(|_| {}).await;
    let client =
        RpcClient::new(harness.addr(), USER, PASSWORD).with_timeout(Duration::from_millis(100));
    assert!(matches!(
        client.call("block", json!([])).await,
        Err(Error::Timeout(_))
    ));
    harness.gate.open.add_permits(1);
}

#[tokio::test]
async fn idle_and_slow_clients_are_cut_off() {
    let harness = Harness::start(|config| config.request_timeout = Duration::from_millis(50)).await;
    let read_all = |mut stream: TcpStream| async move {
        let mut reply = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply))
            .await
            .expect("server closed the connection")
            .expect("clean close");
        String::from_utf8(reply).expect("ASCII reply")
    };

    let silent = TcpStream::connect(harness.addr()).await.unwrap();
    assert_eq!(read_all(silent).await, "");

    let mut half_head = TcpStream::connect(harness.addr()).await.unwrap();
    half_head
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(read_all(half_head).await, "");

    let mut half_body = TcpStream::connect(harness.addr()).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 10\r\n\r\n{{",
        auth()
    );
    half_body.write_all(head.as_bytes()).await.unwrap();
    assert!(read_all(half_body).await.starts_with("HTTP/1.1 408 "));

    // A kept-alive connection is closed once it has been idle too long.
    let mut kept_alive = TcpStream::connect(harness.addr()).await.unwrap();
    let call = r#"{"method":"add","params":[1],"id":1}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{call}",
        auth(),
        call.len()
    );
    kept_alive.write_all(head.as_bytes()).await.unwrap();
    let reply = read_all(kept_alive).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        reply.ends_with("{\"result\":1,\"error\":null,\"id\":1}\n"),
        "{reply}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_authentication_waits_the_configured_delay() {
    // Virtual time: the clock only moves when every task waits on a timer, so the elapsed time
    // is exactly the server's sleeps and the test takes no real time.
    let delay = Duration::from_secs(5);
    let harness = Harness::start(|config| {
        config.auth_failure_delay = delay;
        config.request_timeout = Duration::from_secs(60);
    })
    .await;
    let body = br#"{"method":"add","params":[1],"id":1}"#;
    let started = tokio::time::Instant::now();
    let wrong = post(
        harness.addr(),
        Some(&basic_authorization(USER, "guess")),
        body,
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(started.elapsed() >= delay);

    let started = tokio::time::Instant::now();
    let right = post(harness.addr(), Some(&auth()), body).await;
    assert_eq!(right.status, 200);
    assert!(started.elapsed() < delay);
}

#[tokio::test]
async fn a_shutdown_future_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(
        0,
        AuthConfig::Cookie {
            dir: dir.path().to_owned(),
        },
    );
    config.auth_failure_delay = Duration::ZERO;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (sender, _entered) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        open: Semaphore::new(0),
        entered: sender,
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
    });
    let mut server = RpcServer::start_with_shutdown(config, methods(gate), async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let client = RpcClient::from_cookie(server.local_addr(), dir.path()).unwrap();
    assert_eq!(client.call("add", json!([2])).await.unwrap(), json!(2));
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, server.wait())
        .await
        .expect("server stopped");
    assert!(!dir.path().join(".cookie").exists());
    assert!(matches!(
        client.call("add", json!([2])).await,
        Err(Error::Connect { .. })
    ));
}
