//! What the proxy does to traffic: a set of faults that can be changed at any time and apply
//! to live connections at their next chunk. Each fault is one small, serialisable type.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::FaultError;

/// Added delay on every chunk, `base` plus a uniformly random `0..=jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Milliseconds always added.
    pub base_ms: u64,
    /// Up to this many more milliseconds, at random per chunk.
    #[serde(default)]
    pub jitter_ms: u64,
}

impl Latency {
    pub(crate) fn sample(&self) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            fastrand::u64(0..=self.jitter_ms)
        };
        Duration::from_millis(self.base_ms + jitter)
    }
}

/// Faults for one direction of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionFaults {
    /// Delay each chunk.
    #[serde(default)]
    pub latency: Option<Latency>,
    /// Forward at most this many bytes per second.
    #[serde(default)]
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Read and discard: the sockets stay open, nothing arrives.
    #[serde(default)]
    pub blackhole: bool,
}

/// Which protocol message a [`MessageRule`] reacts to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A COMMIT as the wire tap recognises it: a simple `Query` starting with COMMIT or END,
    /// or the `Execute` of a prepared one. The action covers its whole request (up to the
    /// `Sync` for the extended protocol).
    Commit,
    /// A simple `Query` whose text starts with `prefix` (case-insensitive, after leading
    /// white space).
    Query {
        /// Text the query starts with.
        prefix: String,
    },
    /// A `Parse` whose statement text starts with `prefix`.
    Parse {
        /// Text the statement starts with.
        prefix: String,
    },
    /// The execution of a statement whose text starts with `prefix`: a simple `Query`, or
    /// the `Execute` of a prepared statement (the proxy remembers each connection's
    /// statements by name). The action covers its whole request (up to the `Sync`).
    Execute {
        /// Text the statement starts with.
        prefix: String,
    },
}

/// What to do when a [`Trigger`] matches a message the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Close the connection before the message reaches the server: it never ran.
    CutBefore,
    /// Forward the request, let the server answer it, but drop the answer and close the
    /// client's side once the server has finished: it ran, the client cannot know.
    DropReply,
    /// Forward the request and its answer, then close the connection.
    CutAfterReply,
    /// Swallow the message and everything the client sends after it on that connection,
    /// keeping the connection open: the request is lost on the way and nothing tells the
    /// client (one connection's hung network path).
    SwallowFrom,
}

/// React to a protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRule {
    /// Which message.
    pub trigger: Trigger,
    /// What to do.
    pub action: Action,
    /// Fire once (the default), or on every match.
    #[serde(default = "yes")]
    pub once: bool,
}

fn yes() -> bool {
    true
}

/// Every fault the proxy applies right now. The default passes everything through.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Client to server.
    #[serde(default)]
    pub upstream: DirectionFaults,
    /// Server to client.
    #[serde(default)]
    pub downstream: DirectionFaults,
    /// Refuse new connections (accept and close at once, so the client sees the connection
    /// closed during start-up).
    #[serde(default)]
    pub refuse: bool,
    /// Hold every byte in both directions until unpaused (nothing is lost).
    #[serde(default)]
    pub paused: bool,
    /// Close a connection once this many bytes (both directions together) went through it.
    #[serde(default)]
    pub cut_after_bytes: Option<u64>,
    /// React to a protocol message.
    #[serde(default)]
    pub rule: Option<MessageRule>,
}

impl Faults {
    /// Nothing: pass everything through.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Checks values that cannot work.
    pub fn validate(&self) -> Result<(), FaultError> {
        for (side, d) in [("upstream", &self.upstream), ("downstream", &self.downstream)] {
            if d.bandwidth_bytes_per_sec == Some(0) {
                return Err(FaultError::Invalid {
                    field: format!("{side}.bandwidth_bytes_per_sec"),
                    value: "0".into(),
                    accepted: "at least 1 byte per second (use blackhole to forward nothing)".into(),
                });
            }
            if let Some(l) = d.latency {
                if l.base_ms + l.jitter_ms > 3_600_000 {
                    return Err(FaultError::Invalid {
                        field: format!("{side}.latency"),
                        value: format!("{} + {} ms", l.base_ms, l.jitter_ms),
                        accepted: "at most one hour in total".into(),
                    });
                }
            }
        }
        if let Some(MessageRule {
            trigger: Trigger::Query { prefix } | Trigger::Parse { prefix } | Trigger::Execute { prefix },
            ..
        }) = &self.rule
        {
            if prefix.trim().is_empty() {
                return Err(FaultError::Invalid {
                    field: "rule.trigger.prefix".into(),
                    value: prefix.clone(),
                    accepted: "a non-empty text such as \"COMMIT\"".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_defaults() {
        let f: Faults = serde_json::from_str(
            r#"{"upstream":{"latency":{"base_ms":20,"jitter_ms":5}},"rule":{"trigger":{"kind":"commit"},"action":"drop_reply"}}"#,
        )
        .expect("parse");
        assert_eq!(
            f.upstream.latency,
            Some(Latency {
                base_ms: 20,
                jitter_ms: 5
            })
        );
        assert!(f.rule.as_ref().is_some_and(|r| r.once));
        let back: Faults = serde_json::from_str(&serde_json::to_string(&f).expect("json")).expect("parse");
        assert_eq!(back, f);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(serde_json::from_str::<Faults>(r#"{"latnecy":{}}"#).is_err());
        let zero = Faults {
            downstream: DirectionFaults {
                bandwidth_bytes_per_sec: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = zero.validate().expect_err("zero bandwidth").to_string();
        assert!(err.contains("downstream.bandwidth_bytes_per_sec"), "{err}");
    }

    #[test]
    fn latency_samples_stay_in_range() {
        let l = Latency {
            base_ms: 10,
            jitter_ms: 5,
        };
        for _ in 0..100 {
            let d = l.sample();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15));
        }
    }
}
