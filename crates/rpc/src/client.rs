//! A small client for time-cli: one HTTP/1.1 connection per call, Basic auth, 1.0-style requests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::auth::{basic_authorization, read_cookie};
use crate::error::{Error, RpcError};

/// How long a call may take by default; as bitcoin-cli's `-rpcclienttimeout`, long enough for
/// slow methods such as a rescan.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(900);
/// Largest reply accepted by default; a verbose block can be large, but not unbounded.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// How much of an unexpected HTTP body is kept in an error message.
const ERROR_BODY_SNIPPET_BYTES: usize = 512;

/// A JSON-RPC client for a TimeCoin (or Bitcoin Core) node.
///
/// Plain HTTP only: the RPC listens on loopback, so TLS would add weight without protection.
/// Each call opens a fresh connection, which keeps the client stateless; the CLI makes one call
/// per run anyway.
#[derive(Debug)]
pub struct RpcClient {
    addr: SocketAddr,
    authorization: String,
    timeout: Duration,
    max_response_bytes: usize,
    next_id: AtomicU64,
}

impl RpcClient {
    /// A client that logs in with `user` and `password`.
    pub fn new(addr: SocketAddr, user: &str, password: &str) -> Self {
        Self {
            addr,
            authorization: basic_authorization(user, password),
            timeout: DEFAULT_CLIENT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            next_id: AtomicU64::new(1),
        }
    }

    /// A client that logs in with the cookie the node wrote into `data_dir`.
    pub fn from_cookie(addr: SocketAddr, data_dir: &Path) -> Result<Self, Error> {
        let (user, password) = read_cookie(data_dir)?;
        Ok(Self::new(addr, &user, &password))
    }

    /// Sets how long one call may take, connection included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest reply body accepted.
    pub fn with_max_response_bytes(mut self, max_response_bytes: usize) -> Self {
        self.max_response_bytes = max_response_bytes;
        self
    }

    /// Calls `method` with `params` (an array for positional, an object for named arguments).
    ///
    /// A JSON-RPC error from the node comes back as [`Error::Rpc`] with its code and message;
    /// bad credentials as [`Error::Unauthorized`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Error> {
        tokio::time::timeout(self.timeout, self.exchange(method, params))
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    async fn exchange(&self, method: &str, params: Value) -> Result<Value, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: self.addr,
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| Error::Http(error.to_string()))?;
        // The connection future does the I/O; it ends when `sender` is dropped.
        let driver = tokio::spawn(connection);
        let request = hyper::Request::post("/")
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, &self.authorization)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|error| Error::Http(error.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| Error::Http(error.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), self.max_response_bytes)
            .collect()
            .await
            .map_err(|error| Error::Http(format!("reading the reply: {error}")))?
            .to_bytes();
        drop(sender);
        driver.abort();
        decode_reply(status, &body, id)
    }
}

/// Interprets a reply the way bitcoin-cli does: the JSON body wins over the HTTP status, since
/// Core sends 404/500 together with a JSON-RPC error for 1.x requests.
fn decode_reply(status: u16, body: &[u8], id: u64) -> Result<Value, Error> {
    if status == 401 {
        return Err(Error::Unauthorized);
    }
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        _ if status != 200 => {
            return Err(Error::HttpStatus {
                status,
                body: snippet(body),
            });
        }
        _ => return Err(Error::InvalidResponse(snippet(body))),
    };
    match object.get("error") {
        None | Some(Value::Null) => {}
        Some(error) => {
            let error: RpcError = serde_json::from_value(error.clone()).map_err(|_| {
                Error::InvalidResponse(format!("error member is not {{code, message}}: {error}"))
            })?;
            return Err(Error::Rpc(error));
        }
    }
    if status != 200 {
        return Err(Error::HttpStatus {
            status,
            body: snippet(body),
        });
    }
    if object.get("id") != Some(&Value::from(id)) {
        return Err(Error::InvalidResponse(format!(
            "reply id {:?} does not match request id {id}",
            object.get("id")
        )));
    }
    object
        .get("result")
        .cloned()
        .ok_or_else(|| Error::InvalidResponse("reply has neither result nor error".into()))
}

fn snippet(body: &[u8]) -> String {
    let end = body.len().min(ERROR_BODY_SNIPPET_BYTES);
    String::from_utf8_lossy(&body[..end]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;

    #[test]
    fn decodes_results_and_errors() {
        assert_eq!(
            decode_reply(200, br#"{"result":[1],"error":null,"id":7}"#, 7).unwrap(),
            json!([1])
        );
        let error = decode_reply(
            404,
            br#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":7}"#,
            7,
        )
        .unwrap_err();
        assert!(
            matches!(&error, Error::Rpc(rpc) if rpc.code == codes::RPC_METHOD_NOT_FOUND),
            "{error:?}"
        );
    }

    #[test]
    fn reports_transport_level_failures() {
        assert!(matches!(
            decode_reply(401, b"", 1),
            Err(Error::Unauthorized)
        ));
        assert!(matches!(
            decode_reply(503, b"Work queue depth exceeded\n", 1),
            Err(Error::HttpStatus { status: 503, body }) if body == "Work queue depth exceeded"
        ));
        assert!(matches!(
            decode_reply(200, b"not json", 1),
            Err(Error::InvalidResponse(_))
        ));
        assert!(matches!(
            decode_reply(200, br#"{"result":1,"error":null,"id":2}"#, 1),
            Err(Error::InvalidResponse(_))
        ));
        assert!(matches!(
            decode_reply(500, br#"{"result":null,"error":"boom","id":1}"#, 1),
            Err(Error::InvalidResponse(_))
        ));
    }
}
