//! TimeCoin's JSON-RPC transport: an HTTP server that speaks to Bitcoin tooling unchanged, and
//! the client time-cli uses.
//!
//! The node plugs in by implementing [`RpcHandler`] (normally by filling a [`Methods`] table);
//! this crate owns everything between the socket and that call.
//!
//! # Why not jsonrpsee
//! Bitcoin clients send JSON-RPC 1.0/1.1 (no `jsonrpc` member, or a 1.1 `version` member),
//! which jsonrpsee rejects, and python-bitcoinrpc refuses any `Content-Type` other than exactly
//! `application/json`. A dispatcher of a few hundred lines on hyper's HTTP/1 server costs less
//! to compile than axum or jsonrpsee and lets us mirror Bitcoin Core's behaviour exactly.
//!
//! # Wire behaviour (mirrors Bitcoin Core ≥ 28, `httprpc.cpp` / `rpc/request.cpp`)
//! | Situation | HTTP | Body |
//! | --- | --- | --- |
//! | not POST | 405 | text |
//! | missing or wrong credentials | 401 after [`ServerConfig::auth_failure_delay`] | empty, `WWW-Authenticate: Basic realm="jsonrpc"` |
//! | body larger than [`ServerConfig::max_body_bytes`] | 413 | text |
//! | work queue full | 503 | text `Work queue depth exceeded` |
//! | body not JSON / top level neither object nor array | 500 | 1.x error −32700 (Core maps every code but −32600/−32601 to 500) |
//! | request object invalid (no method, bad `params`, bad `jsonrpc`) | 400 | error −32600, 2.0-shaped if `jsonrpc: "2.0"` was read |
//! | 1.x request, success | 200 | `{"result", "error": null, "id"}` |
//! | 1.x request, method not found | 404 | `{"result": null, "error": {…}, "id"}` |
//! | 1.x request, any other error | 500 | same shape |
//! | 2.0 request, success | 200 | `{"jsonrpc": "2.0", "result", "error": null, "id"}` |
//! | 2.0 request, error | 200 | `{"jsonrpc": "2.0", "error", "id"}` |
//! | 2.0 notification (no `id`) | 204 | empty; the method still runs |
//! | batch | 200 | array of replies in request order, each in its request's shape; notifications omitted; 204 if only notifications; `[]` for an empty batch |
//! | batch longer than [`ServerConfig::max_batch_len`] | 400 | single error −32600 |
//!
//! Where we differ from Core, on purpose: a request *without* an `Authorization` header also
//! waits for the failure delay (Core answers it at once), so probing costs the same either way;
//! a 1.x reply always carries `id` (null if the request had none); a successful 2.0 reply also
//! carries `"error": null`, which python-bitcoinrpc's `batch_` requires (see [`protocol::Reply`]).
//!
//! # Limits
//! Every resource has a bound: body size (413), requests executing
//! ([`ServerConfig::worker_count`]) and waiting ([`ServerConfig::work_queue_depth`], then 503),
//! open connections ([`ServerConfig::max_connections`], then the kernel's backlog), batch
//! length, and time to receive headers and body ([`ServerConfig::request_timeout`]).

pub mod auth;
pub mod client;
pub mod error;
pub mod handler;
pub mod params;
pub mod protocol;
pub mod server;
pub mod stats;

pub use auth::AuthConfig;
pub use client::RpcClient;
pub use error::{Error, RpcError, codes};
pub use handler::{Methods, RpcHandler};
pub use params::{Args, FromParam, Params};
pub use server::{RpcServer, ServerConfig, ShutdownTrigger};
pub use stats::{MethodCounters, StatsSnapshot};
