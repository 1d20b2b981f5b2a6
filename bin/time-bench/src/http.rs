//! A keep-alive JSON-RPC client that sends batches.
//!
//! `timecoin_rpc::RpcClient` opens a connection per call, which is right for a CLI but would
//! make connection setup, not the node, the bottleneck of a load test. This client keeps one
//! HTTP/1.1 connection open, reconnects when it breaks, and sends many calls per request.

use std::net::SocketAddr;
use std::path::Path;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The outcome of one call in a batch: its result, or the node's error message.
pub type CallResult = Result<Value, String>;

/// One node's RPC endpoint with a persistent connection.
pub struct Client {
    addr: SocketAddr,
    authorization: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// A client for the node at `addr` that logs in with the cookie in `data_dir`.
    pub fn from_cookie(addr: SocketAddr, data_dir: &Path) -> Result<Client, String> {
        let (user, password) =
            timecoin_rpc::auth::read_cookie(data_dir).map_err(|e| e.to_string())?;
        Ok(Client {
            addr,
            authorization: timecoin_rpc::auth::basic_authorization(&user, &password),
            sender: None,
        })
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            // The connection future does the I/O; it ends when the sender is dropped.
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }

    /// Posts a raw JSON body and returns the parsed reply.
    pub async fn post(&mut self, body: String) -> Result<Value, String> {
        let host = self.addr.to_string();
        let authorization = self.authorization.clone();
        let sender = self.connect().await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::post("/")
            .header(HOST, host)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                self.sender = None;
                return Err(error.to_string());
            }
        };
        let status = response.status().as_u16();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => {
                self.sender = None;
                return Err(error.to_string());
            }
        };
        serde_json::from_slice(&body).map_err(|_| {
            format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })
    }

    /// Calls one method.
    pub async fn call(&mut self, method: &str, params: Value) -> CallResult {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": method, "params": params});
        let reply = self.post(body.to_string()).await?;
        outcome(&reply)
    }

    /// Calls `method` once per parameter list in one HTTP request; results come back in the
    /// order of `params`. An `Err` of the whole batch means the request itself failed.
    pub async fn batch(
        &mut self,
        method: &str,
        params: &[Value],
    ) -> Result<Vec<CallResult>, String> {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = String::with_capacity(params.len() * 96);
        body.push('[');
        for (id, p) in params.iter().enumerate() {
            if id > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{p}}}"#
            ));
        }
        body.push(']');
        let reply = self.post(body).await?;
        let Value::Array(items) = reply else {
            return Err(format!("not a batch reply: {}", snippet(&reply)));
        };
        let mut results: Vec<CallResult> = vec![Err("no reply for this call".into()); params.len()];
        for item in &items {
            if let Some(id) = item["id"].as_u64().map(|i| i as usize)
                && id < results.len()
            {
                results[id] = outcome(item);
            }
        }
        Ok(results)
    }
}

fn snippet(value: &Value) -> String {
    let text = value.to_string();
    text[..text.len().min(200)].to_owned()
}

/// A JSON-RPC reply object's result or error message.
fn outcome(reply: &Value) -> CallResult {
    match reply.get("error") {
        None | Some(Value::Null) => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        Some(error) => Err(error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string())),
    }
}
