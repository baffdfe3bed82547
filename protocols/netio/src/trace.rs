//! State-transition records and the sink they go to.
//!
//! Every sans-IO machine reports its state changes here so that tests can snapshot
//! them and the simulator can hash them: two runs with one seed must give the same
//! rendering byte for byte.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One state change of one machine: the unit of the transition trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Time since the driver's origin (virtual time in simulation).
    pub at: Duration,
    /// Which machine changed, e.g. `kcp[client:1]` or `h2t-stream[3]`.
    pub machine: Cow<'static, str>,
    /// State before the change.
    pub from: Cow<'static, str>,
    /// State after the change.
    pub to: Cow<'static, str>,
    /// Why it changed, e.g. `recv SYN` or `rto backoff 400ms`.
    pub cause: Cow<'static, str>,
}

impl Transition {
    /// Builds a record; accepts `&'static str` or `String` for every text field.
    pub fn new(
        at: Duration,
        machine: impl Into<Cow<'static, str>>,
        from: impl Into<Cow<'static, str>>,
        to: impl Into<Cow<'static, str>>,
        cause: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            at,
            machine: machine.into(),
            from: from.into(),
            to: to.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for Transition {
    /// The stable text form: microseconds, machine, from -> to, cause.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>12}us {} {} -> {} ({})",
            self.at.as_micros(),
            self.machine,
            self.from,
            self.to,
            self.cause
        )
    }
}

/// A cloneable handle to a shared, ordered list of transitions.
///
/// Machines hold a clone and call [`Trace::record`]; a disabled trace drops records so
/// the real-network binary pays nothing unless asked to keep them.
///
/// With a clock ([`Trace::with_clock`]) every record is stamped with that clock instead of
/// the machine's own `now`: drivers count time from their own origin, so a simulation
/// stamps all machines with simulated time to put them on one timeline.
#[derive(Clone, Default)]
pub struct Trace {
    inner: Option<Arc<Mutex<Vec<Transition>>>>,
    clock: Option<Clock>,
}

/// A shared time source for stamping records.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("enabled", &self.inner.is_some())
            .field("len", &self.len())
            .finish()
    }
}

impl Trace {
    /// A trace that keeps every record.
    pub fn recording() -> Self {
        Self {
            inner: Some(Arc::new(Mutex::new(Vec::new()))),
            clock: None,
        }
    }

    /// A trace that keeps every record, stamped with `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            inner: Some(Arc::new(Mutex::new(Vec::new()))),
            clock: Some(clock),
        }
    }

    /// A trace that drops every record (the default).
    pub fn disabled() -> Self {
        Self {
            inner: None,
            clock: None,
        }
    }

    /// Whether records are kept; lets callers skip building costly cause strings.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Appends one record (also logged at trace level through `tracing`).
    pub fn record(&self, mut t: Transition) {
        if let Some(clock) = &self.clock {
            t.at = clock();
        }
        tracing::trace!(target: "tunnelbed::transition", "{t}");
        if let Some(inner) = &self.inner {
            inner.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
    }

    /// Shorthand for [`Trace::record`] with [`Transition::new`].
    pub fn transition(
        &self,
        at: Duration,
        machine: impl Into<Cow<'static, str>>,
        from: impl Into<Cow<'static, str>>,
        to: impl Into<Cow<'static, str>>,
        cause: impl Into<Cow<'static, str>>,
    ) {
        if self.inner.is_some() {
            self.record(Transition::new(at, machine, from, to, cause));
        }
    }

    /// Number of records kept so far.
    pub fn len(&self) -> usize {
        self.inner
            .as_ref()
            .map(|i| i.lock().unwrap_or_else(|e| e.into_inner()).len())
            .unwrap_or(0)
    }

    /// True when no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every record, in order.
    pub fn snapshot(&self) -> Vec<Transition> {
        self.inner
            .as_ref()
            .map(|i| i.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The stable text rendering: one [`Transition`] per line.
    pub fn render(&self) -> String {
        render(&self.snapshot())
    }

    /// SHA-256 of [`Trace::render`], hex, first 16 characters: what determinism checks compare.
    pub fn hash(&self) -> String {
        hash_text(&self.render())
    }
}

/// Renders records one per line, each ending in a newline.
pub fn render(records: &[Transition]) -> String {
    let mut out = String::new();
    for t in records {
        out.push_str(&t.to_string());
        out.push('\n');
    }
    out
}

/// Short stable hash of a text (SHA-256, first 16 hex characters).
pub fn hash_text(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_is_stable() {
        let t = Trace::recording();
        t.transition(Duration::from_millis(5), "m[1]", "a", "b", "because");
        t.transition(
            Duration::from_micros(7),
            String::from("m[2]"),
            "b",
            "c",
            "x",
        );
        assert_eq!(
            t.render(),
            "        5000us m[1] a -> b (because)\n           7us m[2] b -> c (x)\n"
        );
        assert_eq!(t.hash(), hash_text(&t.render()));
        assert_eq!(t.hash().len(), 16);
    }

    #[test]
    fn disabled_trace_keeps_nothing() {
        let t = Trace::disabled();
        t.transition(Duration::ZERO, "m", "a", "b", "c");
        assert!(t.is_empty());
        assert!(!t.is_enabled());
    }
}
