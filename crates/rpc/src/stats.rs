//! Request and outcome counters, kept small so the daemon can export them as metrics later.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Counters for one method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodCounters {
    /// Calls that reached the handler.
    pub calls: u64,
    /// Calls that returned a JSON-RPC error.
    pub errors: u64,
    /// Time spent in the handler over all calls, in microseconds.
    pub total_time_us: u64,
}

/// Counters for what happened at the HTTP level, before or instead of a method call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// HTTP requests received.
    pub requests: u64,
    /// Requests refused with 401.
    pub unauthorized: u64,
    /// Requests refused with 413 because the body was too large.
    pub body_too_large: u64,
    /// Requests refused with 503 because the work queue was full.
    pub busy: u64,
    /// Bodies that were not JSON, or whose top level was not an object or array.
    pub parse_errors: u64,
    /// Request objects without a usable method, params or version.
    pub invalid_requests: u64,
    /// Calls to methods the handler does not know (one bucket, so junk names cannot grow the map).
    pub unknown_methods: u64,
}

/// A copy of all counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Per known method.
    pub methods: BTreeMap<String, MethodCounters>,
    /// HTTP-level outcomes.
    pub http: HttpCounters,
}

/// Thread-safe counters shared by all connections.
///
/// A plain mutex suffices: it is held for a map update, far below the cost of the HTTP
/// exchange around it.
#[derive(Debug, Default)]
pub struct RpcStats {
    inner: Mutex<StatsSnapshot>,
}

/// An HTTP-level event to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpEvent {
    Request,
    Unauthorized,
    BodyTooLarge,
    Busy,
    ParseError,
    InvalidRequest,
}

impl RpcStats {
    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        // Counters stay meaningful even if a panic interrupted an update elsewhere.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn count(&self, event: HttpEvent) {
        let mut stats = self.lock();
        let counter = match event {
            HttpEvent::Request => &mut stats.http.requests,
            HttpEvent::Unauthorized => &mut stats.http.unauthorized,
            HttpEvent::BodyTooLarge => &mut stats.http.body_too_large,
            HttpEvent::Busy => &mut stats.http.busy,
            HttpEvent::ParseError => &mut stats.http.parse_errors,
            HttpEvent::InvalidRequest => &mut stats.http.invalid_requests,
        };
        *counter += 1;
    }

    pub(crate) fn record_call(&self, method: &str, known: bool, failed: bool, elapsed: Duration) {
        let mut stats = self.lock();
        if !known {
            stats.http.unknown_methods += 1;
            return;
        }
        let counters = stats.methods.entry(method.to_owned()).or_default();
        counters.calls += 1;
        counters.errors += u64::from(failed);
        counters.total_time_us = counters
            .total_time_us
            .saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }
}
