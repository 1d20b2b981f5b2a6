//! The JSON-RPC wire forms Bitcoin clients use: parsing requests and shaping replies.

use serde::Serialize;
use serde_json::Value;

use crate::error::{RpcError, codes};
use crate::params::Params;

/// Which reply shape a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// JSON-RPC 1.0/1.1, or no version at all: reply carries `result`, `error` and `id` always.
    Legacy,
    /// `"jsonrpc": "2.0"`: reply carries `jsonrpc`, `result` with `"error": null` on success or
    /// `error` alone on failure, and `id`; a request without `id` is a notification and gets no
    /// reply.
    V2,
}

/// One parsed request object.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The reply shape.
    pub version: Version,
    /// The `id` as sent; `None` when absent (a notification in 2.0).
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The arguments.
    pub params: Params,
}

impl Request {
    /// A 2.0 request without `id`: run it, but send nothing back.
    pub fn is_notification(&self) -> bool {
        self.version == Version::V2 && self.id.is_none()
    }
}

/// A request object that could not be parsed, with as much as was learnt before the failure so
/// the error reply can still echo the id and use the right shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRequest {
    /// Reply shape; `Legacy` unless a valid `"jsonrpc": "2.0"` was read.
    pub version: Version,
    /// The `id`, if it was present.
    pub id: Option<Value>,
    /// Why it was rejected (always `RPC_INVALID_REQUEST`).
    pub error: RpcError,
}

/// Parses one request object, following Core's `JSONRPCRequest::parse`.
///
/// The 1.1 `"version"` member is ignored, as Core does; `"jsonrpc": "1.0"` is accepted as
/// legacy because old documentation told clients to send it.
pub fn parse_request(value: Value) -> Result<Request, RejectedRequest> {
    let Value::Object(mut object) = value else {
        return Err(RejectedRequest {
            version: Version::Legacy,
            id: None,
            error: invalid_request("Invalid Request object"),
        });
    };
    let id = object.remove("id");
    let reject = |version, message: &str| RejectedRequest {
        version,
        id: id.clone(),
        error: invalid_request(message),
    };
    let version = match object.get("jsonrpc") {
        None | Some(Value::Null) => Version::Legacy,
        Some(Value::String(text)) if text == "1.0" => Version::Legacy,
        Some(Value::String(text)) if text == "2.0" => Version::V2,
        Some(Value::String(_)) => {
            return Err(reject(Version::Legacy, "JSON-RPC version not supported"));
        }
        Some(_) => return Err(reject(Version::Legacy, "jsonrpc field must be a string")),
    };
    let method = match object.remove("method") {
        None | Some(Value::Null) => return Err(reject(version, "Missing method")),
        Some(Value::String(method)) => method,
        Some(_) => return Err(reject(version, "Method must be a string")),
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Params::default(),
        Some(Value::Array(values)) => Params::Positional(values),
        Some(Value::Object(map)) => Params::Named(map),
        Some(_) => return Err(reject(version, "Params must be an array or object")),
    };
    Ok(Request {
        version,
        id,
        method,
        params,
    })
}

fn invalid_request(message: &str) -> RpcError {
    RpcError::new(codes::RPC_INVALID_REQUEST, message)
}

/// The `error` member of a 2.0 reply: `null` beside a result, absent beside nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum V2Error {
    /// Omitted (never serialised): the reply is an error reply built without a result.
    Absent,
    /// `null`, on success.
    Null,
    /// The failure.
    Error(RpcError),
}

impl V2Error {
    fn is_absent(&self) -> bool {
        matches!(self, V2Error::Absent)
    }
}

/// One reply object, serialised with its members in Core's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `{"result": …, "error": …, "id": …}` with both `result` and `error` always present.
    Legacy {
        /// The result, `null` on error.
        result: Value,
        /// The error, `null` on success.
        error: Option<RpcError>,
        /// The request's id, `null` if it had none.
        id: Value,
    },
    /// `{"jsonrpc": "2.0", "result": …, "error": null, "id": …}` or
    /// `{"jsonrpc": "2.0", "error": …, "id": …}`.
    ///
    /// The `"error": null` on success departs from the 2.0 text (and from Core ≥ 28) on purpose:
    /// python-bitcoinrpc's `batch_`, which sends 2.0 requests, reads `response['error']` from
    /// every reply and fails with `KeyError` without it. Clients that follow the 2.0 text test
    /// for `error` being absent *or* null, so they are unaffected.
    V2 {
        /// Always `"2.0"`.
        jsonrpc: &'static str,
        /// Present on success.
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The error on failure; `null` on success (see above), absent when `result` is.
        #[serde(skip_serializing_if = "V2Error::is_absent")]
        error: V2Error,
        /// The request's id, `null` if it could not be read.
        id: Value,
    },
}

impl Reply {
    /// The reply to a request of `version` and `id` with the given outcome.
    pub fn new(version: Version, id: Option<Value>, outcome: Result<Value, RpcError>) -> Self {
        let id = id.unwrap_or(Value::Null);
        match (version, outcome) {
            (Version::Legacy, Ok(result)) => Reply::Legacy {
                result,
                error: None,
                id,
            },
            (Version::Legacy, Err(error)) => Reply::Legacy {
                result: Value::Null,
                error: Some(error),
                id,
            },
            (Version::V2, Ok(result)) => Reply::V2 {
                jsonrpc: "2.0",
                result: Some(result),
                error: V2Error::Null,
                id,
            },
            (Version::V2, Err(error)) => Reply::V2 {
                jsonrpc: "2.0",
                result: None,
                error: V2Error::Error(error),
                id,
            },
        }
    }
}

/// The HTTP status Core's `JSONErrorReply` sends when a single request fails at the HTTP level:
/// 400 for an invalid request, 404 for an unknown method, 500 for everything else.
pub fn http_status_for_error(code: i32) -> u16 {
    match code {
        codes::RPC_INVALID_REQUEST => 400,
        codes::RPC_METHOD_NOT_FOUND => 404,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn to_json(reply: Reply) -> String {
        serde_json::to_string(&reply).unwrap()
    }

    #[test]
    fn accepts_every_version_form() {
        for (request, version) in [
            (json!({"method": "m", "id": 1}), Version::Legacy),
            (
                json!({"version": "1.1", "method": "m", "id": 1}),
                Version::Legacy,
            ),
            (
                json!({"jsonrpc": "1.0", "method": "m", "id": 1}),
                Version::Legacy,
            ),
            (
                json!({"jsonrpc": "2.0", "method": "m", "id": 1}),
                Version::V2,
            ),
        ] {
            let parsed = parse_request(request).unwrap();
            assert_eq!(parsed.version, version);
            assert_eq!(parsed.params, Params::Positional(vec![]));
            assert_eq!(parsed.id, Some(json!(1)));
        }
    }

    #[test]
    fn rejects_malformed_objects_keeping_the_id() {
        for (request, message) in [
            (json!({"id": 4}), "Missing method"),
            (json!({"id": 4, "method": 3}), "Method must be a string"),
            (
                json!({"id": 4, "method": "m", "params": "x"}),
                "Params must be an array or object",
            ),
            (
                json!({"id": 4, "jsonrpc": "3.0", "method": "m"}),
                "JSON-RPC version not supported",
            ),
            (
                json!({"id": 4, "jsonrpc": 2, "method": "m"}),
                "jsonrpc field must be a string",
            ),
        ] {
            let rejected = parse_request(request).unwrap_err();
            assert_eq!(rejected.error.code, codes::RPC_INVALID_REQUEST);
            assert_eq!(rejected.error.message, message);
            assert_eq!(rejected.id, Some(json!(4)));
        }
        assert_eq!(parse_request(json!([1])).unwrap_err().id, None);
    }

    #[test]
    fn replies_have_cores_shapes() {
        assert_eq!(
            to_json(Reply::new(Version::Legacy, Some(json!(1)), Ok(json!(5)))),
            r#"{"result":5,"error":null,"id":1}"#
        );
        assert_eq!(
            to_json(Reply::new(
                Version::Legacy,
                None,
                Err(RpcError::method_not_found())
            )),
            r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":null}"#
        );
        assert_eq!(
            to_json(Reply::new(Version::V2, Some(json!("a")), Ok(Value::Null))),
            r#"{"jsonrpc":"2.0","result":null,"error":null,"id":"a"}"#
        );
        assert_eq!(
            to_json(Reply::new(
                Version::V2,
                Some(json!("a")),
                Err(RpcError::misc("no"))
            )),
            r#"{"jsonrpc":"2.0","error":{"code":-1,"message":"no"},"id":"a"}"#
        );
    }
}
