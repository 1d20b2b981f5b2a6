//! What the server calls: the [`RpcHandler`] trait and the [`Methods`] registry that implements it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::error::RpcError;
use crate::params::Params;

/// Answers RPC calls; the node implements this (usually through [`Methods`]).
///
/// The call is async because the node is a single-owner state machine: a method will typically
/// send a command to the node's task and await its reply, without tying up a thread. CPU-heavy
/// or blocking methods should use [`Methods::register_blocking`] (or `spawn_blocking`).
///
/// The server runs each call in its own task, so a call is not cancelled when the client hangs
/// up (a half-applied `sendrawtransaction` is worse than wasted work), and a panic in a method
/// becomes `RPC_INTERNAL_ERROR` instead of a dropped connection.
pub trait RpcHandler: Send + Sync + 'static {
    /// Runs `method`. Returns [`RpcError::method_not_found`] for methods it does not know.
    fn call(
        &self,
        method: &str,
        params: Params,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;

    /// Whether consecutive calls to `method` in one batch may run at the same time. The others
    /// run one after another, in order, as in Core. Replies keep the batch's order either way.
    fn concurrent_in_batch(&self, method: &str) -> bool {
        let _ = method;
        false
    }
}

pub(crate) type BoxedCall = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;
type MethodFn = Arc<dyn Fn(Params) -> BoxedCall + Send + Sync>;

struct Method {
    summary: String,
    function: MethodFn,
    concurrent_in_batch: bool,
}

/// A table of named methods with a built-in `help`.
///
/// `help` lists every registered method with its one-line summary; `help <method>` shows that
/// method's summary. Registering a method called `help` replaces the built-in one.
#[derive(Default)]
pub struct Methods {
    table: BTreeMap<String, Method>,
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.table.keys()).finish()
    }
}

impl Methods {
    /// An empty table (only the built-in `help` answers).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an async method. `summary` is its line in `help`, e.g. `"getblockcount"` followed by
    /// a short description.
    ///
    /// # Panics
    /// If `name` is already registered: two methods of one name is a programming error.
    pub fn register<F, Fut>(&mut self, name: &str, summary: &str, function: F) -> &mut Self
    where
        F: Fn(Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, RpcError>> + Send + 'static,
    {
        let function: MethodFn = Arc::new(move |params| Box::pin(function(params)));
        self.insert(name, summary, function)
    }

    /// Adds a synchronous method that may block (disk, heavy CPU); it runs on tokio's blocking
    /// thread pool so it cannot stall the server's other connections.
    ///
    /// # Panics
    /// If `name` is already registered.
    pub fn register_blocking<F>(&mut self, name: &str, summary: &str, function: F) -> &mut Self
    where
        F: Fn(Params) -> Result<Value, RpcError> + Send + Sync + 'static,
    {
        let function = Arc::new(function);
        let function: MethodFn = Arc::new(move |params| {
            let function = Arc::clone(&function);
            Box::pin(async move {
                tokio::task::spawn_blocking(move || function(params))
                    .await
                    .unwrap_or_else(|_| Err(RpcError::internal("Internal error: method panicked")))
            })
        });
        self.insert(name, summary, function)
    }

    fn insert(&mut self, name: &str, summary: &str, function: MethodFn) -> &mut Self {
        let previous = self.table.insert(
            name.to_owned(),
            Method {
                summary: summary.to_owned(),
                function,
                concurrent_in_batch: false,
            },
        );
        assert!(previous.is_none(), "RPC method {name} registered twice");
        self
    }

    /// Lets consecutive calls to the registered method `name` in one batch run at the same time
    /// ([`RpcHandler::concurrent_in_batch`]). For methods whose calls do not depend on each
    /// other's effects: `sendrawtransaction` batches then reach the node together, and it
    /// verifies their signatures as one batch instead of one call at a time.
    ///
    /// # Panics
    /// If `name` is not registered.
    pub fn concurrent_in_batches(&mut self, name: &str) -> &mut Self {
        self.table
            .get_mut(name)
            .unwrap_or_else(|| panic!("RPC method {name} is not registered"))
            .concurrent_in_batch = true;
        self
    }

    /// The registered method names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.table.keys().map(String::as_str)
    }

    /// The text of the built-in `help`: all summaries, or one method's.
    pub fn help(&self, method: Option<&str>) -> String {
        match method {
            None => {
                let mut text = String::from("== Commands ==\n");
                for (name, method) in &self.table {
                    let line = if method.summary.is_empty() {
                        name
                    } else {
                        &method.summary
                    };
                    text.push_str(line);
                    text.push('\n');
                }
                text.push_str("help ( \"command\" )\n");
                text
            }
            Some(name) => match self.table.get(name) {
                Some(method) if !method.summary.is_empty() => method.summary.clone(),
                Some(_) => name.to_owned(),
                // Core answers an unknown topic with text, not an error.
                None => format!("help: unknown command: {name}"),
            },
        }
    }
}

impl RpcHandler for Methods {
    fn call(
        &self,
        method: &str,
        params: Params,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send {
        let outcome: Result<BoxedCall, RpcError> = match self.table.get(method) {
            Some(entry) => Ok((entry.function)(params)),
            None if method == "help" => params
                .bind(&["command"])
                .and_then(|args| args.optional::<String>(0))
                .map(|topic| {
                    let text = self.help(topic.as_deref());
                    Box::pin(async move { Ok(Value::String(text)) }) as BoxedCall
                }),
            None => Err(RpcError::method_not_found()),
        };
        async move { outcome?.await }
    }

    fn concurrent_in_batch(&self, method: &str) -> bool {
        self.table
            .get(method)
            .is_some_and(|entry| entry.concurrent_in_batch)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::codes;

    fn table() -> Methods {
        let mut methods = Methods::new();
        methods
            .register("echo", "echo ( value )", |params| async move {
                Ok(json!(params.bind(&["value"])?.get(0)))
            })
            .register_blocking("count", "count", |_| Ok(json!(3)));
        methods
    }

    #[tokio::test]
    async fn dispatches_async_and_blocking_methods() {
        let methods = table();
        let echoed = methods
            .call("echo", Params::Positional(vec![json!("x")]))
            .await;
        assert_eq!(echoed, Ok(json!("x")));
        assert_eq!(methods.call("count", Params::default()).await, Ok(json!(3)));
        let missing = methods.call("nosuch", Params::default()).await.unwrap_err();
        assert_eq!(missing.code, codes::RPC_METHOD_NOT_FOUND);
    }

    #[tokio::test]
    async fn builtin_help_lists_methods() {
        let methods = table();
        let all = methods.call("help", Params::default()).await.unwrap();
        let all = all.as_str().unwrap();
        assert!(
            all.contains("echo ( value )") && all.contains("count"),
            "{all}"
        );
        let one = methods
            .call("help", Params::Positional(vec![json!("echo")]))
            .await;
        assert_eq!(one, Ok(json!("echo ( value )")));
        let bad = methods
            .call("help", Params::Positional(vec![json!(5)]))
            .await
            .unwrap_err();
        assert_eq!(bad.code, codes::RPC_TYPE_ERROR);
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_registration_panics() {
        let mut methods = table();
        methods.register_blocking("count", "", |_| Ok(Value::Null));
    }
}
