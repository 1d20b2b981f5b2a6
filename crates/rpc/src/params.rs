//! Request parameters: positional or named, with typed extraction and Bitcoin Core's error texts.

use serde_json::{Map, Value};

use crate::error::{RpcError, codes};

/// The `params` of one request, as the client sent them.
///
/// Bitcoin clients send either an array (positional) or, since Core 0.14, an object (named).
/// A handler declares its argument names once with [`Params::bind`] and then reads arguments
/// by position, whichever form arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// `"params": [ … ]`, or no `params` at all (treated as an empty array, as Core does).
    Positional(Vec<Value>),
    /// `"params": { "name": … }`.
    Named(Map<String, Value>),
}

impl Default for Params {
    fn default() -> Self {
        Params::Positional(Vec::new())
    }
}

/// The JSON type names Bitcoin Core uses in its type errors (UniValue's `uvTypeName`).
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Params {
    /// Whether no argument was given at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Params::Positional(values) => values.is_empty(),
            Params::Named(map) => map.is_empty(),
        }
    }

    /// Maps the arguments onto the method's declared argument `names`, in order.
    ///
    /// Rejects, with `RPC_INVALID_PARAMETER` like Core, more positional arguments than names and
    /// named arguments the method does not declare, so a typo is an error instead of being
    /// silently ignored.
    pub fn bind(self, names: &'static [&'static str]) -> Result<Args, RpcError> {
        let values = match self {
            Params::Positional(values) => {
                if values.len() > names.len() {
                    return Err(RpcError::invalid_parameter(format!(
                        "Too many parameters: got {}, this method takes at most {}",
                        values.len(),
                        names.len()
                    )));
                }
                let mut values: Vec<Option<Value>> = values.into_iter().map(Some).collect();
                values.resize(names.len(), None);
                values
            }
            Params::Named(mut map) => {
                let values = names.iter().map(|name| map.remove(*name)).collect();
                if let Some(unknown) = map.keys().next() {
                    return Err(RpcError::invalid_parameter(format!(
                        "Unknown named parameter {unknown}"
                    )));
                }
                values
            }
        };
        Ok(Args { names, values })
    }
}

/// Arguments bound to their names by [`Params::bind`]; read them by position.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    names: &'static [&'static str],
    values: Vec<Option<Value>>,
}

impl Args {
    /// The argument at `index`, or `None` when it was omitted or passed as JSON `null`.
    ///
    /// Core treats `null` as "use the default", which is how a client skips an optional
    /// positional argument to reach a later one.
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.values
            .get(index)
            .and_then(Option::as_ref)
            .filter(|value| !value.is_null())
    }

    /// The argument at `index` converted to `T`; missing is `RPC_INVALID_PARAMETER`.
    pub fn required<T: FromParam>(&self, index: usize) -> Result<T, RpcError> {
        match self.get(index) {
            Some(value) => T::from_param(value, self.name(index)),
            None => Err(RpcError::invalid_parameter(format!(
                "Missing required argument '{}' (position {})",
                self.name(index),
                index + 1
            ))),
        }
    }

    /// The argument at `index` converted to `T`, or `None` when omitted.
    pub fn optional<T: FromParam>(&self, index: usize) -> Result<Option<T>, RpcError> {
        self.get(index)
            .map(|value| T::from_param(value, self.name(index)))
            .transpose()
    }

    fn name(&self, index: usize) -> &'static str {
        self.names.get(index).copied().unwrap_or("?")
    }
}

/// A Rust type that can be read from one JSON-RPC argument.
pub trait FromParam: Sized {
    /// Converts `value`, the argument called `name`.
    ///
    /// A value of the wrong JSON type is `RPC_TYPE_ERROR` with Core's text ("JSON value of type
    /// string is not of expected type number"); the right type with an unusable value (negative
    /// count, fraction) is `RPC_INVALID_PARAMETER`.
    fn from_param(value: &Value, name: &str) -> Result<Self, RpcError>;
}

fn type_mismatch(value: &Value, expected: &str) -> RpcError {
    RpcError::new(
        codes::RPC_TYPE_ERROR,
        format!(
            "JSON value of type {} is not of expected type {expected}",
            json_type_name(value)
        ),
    )
}

impl FromParam for Value {
    fn from_param(value: &Value, _name: &str) -> Result<Self, RpcError> {
        Ok(value.clone())
    }
}

impl FromParam for bool {
    fn from_param(value: &Value, _name: &str) -> Result<Self, RpcError> {
        value.as_bool().ok_or_else(|| type_mismatch(value, "bool"))
    }
}

impl FromParam for String {
    fn from_param(value: &Value, _name: &str) -> Result<Self, RpcError> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| type_mismatch(value, "string"))
    }
}

impl FromParam for u64 {
    fn from_param(value: &Value, name: &str) -> Result<Self, RpcError> {
        if !value.is_number() {
            return Err(type_mismatch(value, "number"));
        }
        value.as_u64().ok_or_else(|| {
            RpcError::invalid_parameter(format!(
                "Invalid parameter {name}: expected a non-negative integer, got {value}"
            ))
        })
    }
}

impl FromParam for u32 {
    fn from_param(value: &Value, name: &str) -> Result<Self, RpcError> {
        let wide = u64::from_param(value, name)?;
        u32::try_from(wide).map_err(|_| {
            RpcError::invalid_parameter(format!("Invalid parameter {name}: {wide} is out of range"))
        })
    }
}

impl FromParam for i64 {
    fn from_param(value: &Value, name: &str) -> Result<Self, RpcError> {
        if !value.is_number() {
            return Err(type_mismatch(value, "number"));
        }
        value.as_i64().ok_or_else(|| {
            RpcError::invalid_parameter(format!(
                "Invalid parameter {name}: expected an integer, got {value}"
            ))
        })
    }
}

impl FromParam for Vec<Value> {
    fn from_param(value: &Value, _name: &str) -> Result<Self, RpcError> {
        value
            .as_array()
            .cloned()
            .ok_or_else(|| type_mismatch(value, "array"))
    }
}

impl FromParam for Map<String, Value> {
    fn from_param(value: &Value, _name: &str) -> Result<Self, RpcError> {
        value
            .as_object()
            .cloned()
            .ok_or_else(|| type_mismatch(value, "object"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NAMES: &[&str] = &["height", "verbose"];

    fn named(value: Value) -> Params {
        Params::Named(value.as_object().unwrap().clone())
    }

    #[test]
    fn positional_and_named_bind_to_the_same_arguments() {
        let by_position = Params::Positional(vec![json!(7), json!(true)])
            .bind(NAMES)
            .unwrap();
        let by_name = named(json!({"verbose": true, "height": 7}))
            .bind(NAMES)
            .unwrap();
        assert_eq!(by_position, by_name);
        assert_eq!(by_name.required::<u64>(0).unwrap(), 7);
        assert!(by_name.required::<bool>(1).unwrap());
    }

    #[test]
    fn omitted_and_null_arguments_are_missing() {
        let args = Params::Positional(vec![Value::Null]).bind(NAMES).unwrap();
        assert_eq!(args.optional::<u64>(0).unwrap(), None);
        assert_eq!(args.optional::<bool>(1).unwrap(), None);
        let error = args.required::<u64>(0).unwrap_err();
        assert_eq!(error.code, codes::RPC_INVALID_PARAMETER);
        assert!(error.message.contains("'height'"), "{}", error.message);
    }

    #[test]
    fn wrong_json_type_is_a_type_error_with_cores_wording() {
        let args = Params::Positional(vec![json!("7")]).bind(NAMES).unwrap();
        let error = args.required::<u64>(0).unwrap_err();
        assert_eq!(error.code, codes::RPC_TYPE_ERROR);
        assert_eq!(
            error.message,
            "JSON value of type string is not of expected type number"
        );
        let error = Params::Positional(vec![json!(1), json!(1)])
            .bind(NAMES)
            .unwrap()
            .required::<bool>(1)
            .unwrap_err();
        assert_eq!(
            error.message,
            "JSON value of type number is not of expected type bool"
        );
    }

    #[test]
    fn right_type_with_unusable_value_is_invalid_parameter() {
        for bad in [json!(-1), json!(1.5)] {
            let args = Params::Positional(vec![bad]).bind(NAMES).unwrap();
            assert_eq!(
                args.required::<u64>(0).unwrap_err().code,
                codes::RPC_INVALID_PARAMETER
            );
        }
        let args = Params::Positional(vec![json!(u64::from(u32::MAX) + 1)])
            .bind(NAMES)
            .unwrap();
        assert_eq!(
            args.required::<u32>(0).unwrap_err().code,
            codes::RPC_INVALID_PARAMETER
        );
    }

    #[test]
    fn extra_or_unknown_arguments_are_rejected() {
        let error = Params::Positional(vec![json!(1), json!(true), json!(3)])
            .bind(NAMES)
            .unwrap_err();
        assert_eq!(error.code, codes::RPC_INVALID_PARAMETER);
        let error = named(json!({"hieght": 1})).bind(NAMES).unwrap_err();
        assert_eq!(error.code, codes::RPC_INVALID_PARAMETER);
        assert_eq!(error.message, "Unknown named parameter hieght");
    }
}
