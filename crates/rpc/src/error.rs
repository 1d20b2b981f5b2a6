//! Error codes, the JSON-RPC error object, and the crate's error enum.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bitcoin Core's RPC error codes (`src/rpc/protocol.h`), so that tools written against Core
/// interpret our failures the same way.
pub mod codes {
    /// The request body is not valid JSON, or its top level is neither an object nor an array.
    pub const RPC_PARSE_ERROR: i32 = -32700;
    /// The JSON is valid but is not a request object (no method, bad params field, ...).
    pub const RPC_INVALID_REQUEST: i32 = -32600;
    /// No handler knows the method.
    pub const RPC_METHOD_NOT_FOUND: i32 = -32601;
    /// Standard JSON-RPC 2.0 code for bad parameters; Core itself prefers the codes below.
    pub const RPC_INVALID_PARAMS: i32 = -32602;
    /// The server failed in a way that is not the caller's fault.
    pub const RPC_INTERNAL_ERROR: i32 = -32603;
    /// Catch-all for errors without a more specific code.
    pub const RPC_MISC_ERROR: i32 = -1;
    /// A parameter has the wrong JSON type.
    pub const RPC_TYPE_ERROR: i32 = -3;
    /// An address or key is invalid.
    pub const RPC_INVALID_ADDRESS_OR_KEY: i32 = -5;
    /// Not enough memory for the operation.
    pub const RPC_OUT_OF_MEMORY: i32 = -7;
    /// A parameter has the right type but an invalid value, is missing, or is unknown.
    pub const RPC_INVALID_PARAMETER: i32 = -8;
    /// The database failed.
    pub const RPC_DATABASE_ERROR: i32 = -20;
    /// A transaction or block could not be decoded.
    pub const RPC_DESERIALIZATION_ERROR: i32 = -22;
    /// A transaction or block failed verification.
    pub const RPC_VERIFY_ERROR: i32 = -25;
    /// A transaction or block was rejected by network rules.
    pub const RPC_VERIFY_REJECTED: i32 = -26;
    /// The transaction is already in the chain.
    pub const RPC_VERIFY_ALREADY_IN_CHAIN: i32 = -27;
    /// The node is still starting up.
    pub const RPC_IN_WARMUP: i32 = -28;
    /// The RPC method is deprecated.
    pub const RPC_METHOD_DEPRECATED: i32 = -32;
    /// The node has no connection to peers.
    pub const RPC_CLIENT_NOT_CONNECTED: i32 = -9;
    /// The node is still downloading the initial chain.
    pub const RPC_CLIENT_IN_INITIAL_DOWNLOAD: i32 = -10;
    /// A wallet operation failed.
    pub const RPC_WALLET_ERROR: i32 = -4;
    /// The wallet has too little money for the operation.
    pub const RPC_WALLET_INSUFFICIENT_FUNDS: i32 = -6;
    /// The wallet is locked and must be unlocked first.
    pub const RPC_WALLET_UNLOCK_NEEDED: i32 = -13;
    /// The wallet passphrase is wrong.
    pub const RPC_WALLET_PASSPHRASE_INCORRECT: i32 = -14;
    /// The requested wallet does not exist or is not loaded.
    pub const RPC_WALLET_NOT_FOUND: i32 = -18;
    /// TimeCoin's own (Core has no such code): the node refuses new transactions for now,
    /// because more are waiting for finality than it can finalize soon. The transaction was
    /// not looked at; send it again after a short wait (ADR 0026).
    pub const RPC_NODE_BUSY: i32 = -50;
}

/// A JSON-RPC error object as it travels on the wire: `{"code": …, "message": …}`.
///
/// Handlers return this; the server puts it in the response's `error` field, and the client
/// gives it back inside [`Error::Rpc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    /// One of [`codes`], or an application-specific code.
    pub code: i32,
    /// What went wrong, phrased for the person running the command.
    pub message: String,
}

impl RpcError {
    /// An error with the given code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `RPC_METHOD_NOT_FOUND` with Bitcoin Core's wording.
    pub fn method_not_found() -> Self {
        Self::new(codes::RPC_METHOD_NOT_FOUND, "Method not found")
    }

    /// `RPC_INVALID_PARAMETER` (-8).
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_INVALID_PARAMETER, message)
    }

    /// `RPC_TYPE_ERROR` (-3).
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_TYPE_ERROR, message)
    }

    /// `RPC_INTERNAL_ERROR` (-32603).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_INTERNAL_ERROR, message)
    }

    /// `RPC_MISC_ERROR` (-1).
    pub fn misc(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_MISC_ERROR, message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// Everything that can fail in this crate outside a single RPC call's own result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not bind its listening socket; usually the port is taken.
    #[error("cannot bind the RPC server to {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: std::net::SocketAddr,
        /// Why the OS refused.
        source: std::io::Error,
    },
    /// The cookie file could not be written, read or parsed.
    #[error("RPC cookie file {path}: {reason}")]
    Cookie {
        /// The cookie file's path.
        path: std::path::PathBuf,
        /// What went wrong with it.
        reason: String,
    },
    /// The OS could not supply randomness for the cookie.
    #[error("cannot generate the RPC cookie: {0}")]
    Random(String),
    /// The configuration cannot work (for example an empty rpcpassword or a zero limit).
    #[error("invalid RPC configuration: {0}")]
    Config(String),
    /// The client could not reach the server or lost the connection.
    #[error("cannot talk to the RPC server at {addr}: {source}")]
    Connect {
        /// The server's address.
        addr: std::net::SocketAddr,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// The HTTP exchange failed below the JSON-RPC level.
    #[error("HTTP error talking to the RPC server: {0}")]
    Http(String),
    /// The client gave up waiting for the server.
    #[error("the RPC server did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The server rejected the credentials (HTTP 401).
    #[error(
        "the RPC server rejected the credentials (HTTP 401); check rpcuser/rpcpassword or the cookie file"
    )]
    Unauthorized,
    /// The server answered with an HTTP status and a body that is not a JSON-RPC response.
    #[error("the RPC server answered HTTP {status}: {body}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The start of the body, for the person reading the error.
        body: String,
    },
    /// The server's answer is not a well-formed JSON-RPC response.
    #[error("malformed RPC response: {0}")]
    InvalidResponse(String),
    /// The server answered with a JSON-RPC error.
    #[error("RPC error {}: {}", .0.code, .0.message)]
    Rpc(RpcError),
}
