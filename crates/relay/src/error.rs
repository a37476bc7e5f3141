//! The relay's error type and how NATS and store failures map onto it.
//!
//! Callers (and the relay's own retry loop) match on the category, never on message text:
//! [`RelayError::is_retryable`] separates "wait and try again" (NATS or PostgreSQL away or
//! refusing a statement for a passing reason, the stream moved under the pipeline) from problems
//! no retry can fix (a stream that belongs to another database, an event too large for NATS, a
//! stream configuration the server refuses).
//!
//! Which PostgreSQL refusals pass by themselves (a DBA's `statement_timeout`, a deadlock, a plan
//! invalidated by a migration) is decided once, by the event store's classification
//! (`eventstore::is_passing_code`): they arrive here as `StoreError::Unavailable`, and a relay
//! that stopped the node on them would turn a passing hiccup into an outage.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use eventstore::StoreError;

/// A boxed cause, kept for the logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the relay (or `tail`) stopped or had to start over.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// NATS or PostgreSQL could not be reached, timed out or dropped the connection, or
    /// PostgreSQL refused a statement for a reason that passes (a statement or lock timeout, a
    /// deadlock, a serialization failure, exhausted resources, a plan invalidated by a
    /// migration). The relay retries these itself with capped backoff; `run` never returns one.
    #[error("{what} unavailable")]
    Unavailable {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// JetStream no longer holds what the pipeline assumed: a publish was refused by the
    /// expected-last-sequence check, or acknowledged at another sequence. The relay drops its
    /// pipeline and resumes from the stream's last message; nothing was published out of order.
    #[error("out of step with the stream: {0}")]
    OutOfStep(String),
    /// JetStream refused to create or update the stream, for example because its subjects
    /// overlap another stream's.
    #[error("stream {stream} cannot be set up")]
    StreamSetup {
        stream: String,
        #[source]
        source: BoxError,
    },
    /// The stream and the store disagree in a way that publishing cannot repair, such as a last
    /// message whose position or event id the store does not have (a stream left over from
    /// another database). The relay stops rather than skip or duplicate events.
    #[error("stream and store disagree: {0}")]
    Corrupt(String),
    /// An event that NATS will never accept (larger than the server's max_payload). Publishing
    /// must stay in order, so the relay stops instead of skipping it.
    #[error("event at position {position} cannot be published")]
    Unpublishable {
        position: i64,
        #[source]
        source: BoxError,
    },
    /// A configuration value that cannot work, such as a zero pipeline depth.
    #[error("invalid relay configuration: {0}")]
    Config(String),
    /// A test-only fail point was reached (see [`FailPoint`](crate::FailPoint)).
    #[error("fail point {0:?} reached")]
    FaultInjected(crate::FailPoint),
    /// Anything else, with its cause.
    #[error("unexpected relay error")]
    Unexpected(#[source] BoxError),
}

impl RelayError {
    /// Whether waiting and starting over from the stream's last message can fix this.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RelayError::Unavailable { .. } | RelayError::OutOfStep(_)
        )
    }

    /// Whether this is PostgreSQL refusing a statement it prepared before a migration changed
    /// the statement's result type (SQLSTATE 0A000, "cached plan must not change result type").
    /// Such a statement fails on every reuse, so the pool's prepared statements must be dropped
    /// before a retry can succeed.
    pub(crate) fn is_stale_statement(&self) -> bool {
        let RelayError::Unavailable { source, .. } = self else {
            return false;
        };
        match source.downcast_ref::<SharedSource>() {
            Some(SharedSource(shared)) => eventstore::is_stale_statement(&**shared),
            None => eventstore::is_stale_statement(&**source),
        }
    }

    pub(crate) fn nats(source: impl Into<BoxError>) -> RelayError {
        RelayError::Unavailable {
            what: "NATS",
            source: source.into(),
        }
    }
}

impl From<StoreError> for RelayError {
    fn from(error: StoreError) -> RelayError {
        match error {
            StoreError::Unavailable(source) => RelayError::Unavailable {
                what: "event store",
                source: Box::new(SharedSource(source)),
            },
            StoreError::Unexpected(source) => {
                RelayError::Unexpected(Box::new(SharedSource(source)))
            }
        }
    }
}

/// Classifies a failed publish of the event at `position`.
pub(crate) fn publish_error(position: i64, error: PublishError) -> RelayError {
    match error.kind() {
        // The server refused the message because the stream's last sequence is not the one
        // the pipeline expected: an earlier publish of the pipeline is missing (or a stale
        // publish from before landed first). Starting over from the last message fixes it.
        PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId => {
            RelayError::OutOfStep(format!("publish of position {position} refused: {error}"))
        }
        PublishErrorKind::MaxPayloadExceeded => RelayError::Unpublishable {
            position,
            source: Box::new(error),
        },
        // Timeouts, a broken connection, a stream deleted under us (recreated on resync), the
        // client's ack window being full, or a server-side refusal such as exhausted storage:
        // all worth retrying after a pause.
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::Other => RelayError::nats(error),
    }
}

/// Adapts the store's shared error source to a boxed one without losing its chain.
#[derive(Debug)]
struct SharedSource(eventstore::ErrorSource);

impl std::fmt::Display for SharedSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
