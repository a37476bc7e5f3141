//! The projector's error, classified the way callers act on it: retry later (database or NATS
//! unavailable, or PostgreSQL refusing a statement for a passing reason), stop (corrupt or
//! unexpected), or a condition the caller asked for.
//!
//! Which PostgreSQL refusals pass by themselves (a DBA's `statement_timeout`, a deadlock, a plan
//! invalidated by a migration) is decided once, by the event store's classification
//! (`eventstore::is_passing_code`): they arrive here as `StoreError::Unavailable`.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use eventstore::StoreError;
use tokio_postgres::error::SqlState;

use crate::runner::FaultPoint;

pub type ErrorSource = Arc<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectorError {
    /// PostgreSQL could not be reached or dropped the connection, or refused a statement for a
    /// reason that passes (a statement or lock timeout, a deadlock, a serialization failure,
    /// exhausted resources, a plan invalidated by a migration).
    #[error("database unavailable")]
    Unavailable(#[source] ErrorSource),
    #[error("NATS JetStream unavailable: {context}")]
    Messaging {
        context: &'static str,
        #[source]
        source: ErrorSource,
    },
    /// Stored data that cannot be what it claims: a read-model row that does not decode, or a
    /// published position the store does not hold.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("unexpected projector error")]
    Unexpected(#[source] ErrorSource),
    /// A stored event of a known type with a schema version this build cannot read, written by a
    /// newer build during a rolling upgrade. Transient: the projection keeps its checkpoint before
    /// the event and retries, so that nothing is lost once the projector is upgraded.
    #[error(
        "event at position {position} ({event_type}) has schema version {schema_version}, \
         unknown to this build: upgrade the projector"
    )]
    UnknownSchemaVersion {
        position: i64,
        event_type: String,
        schema_version: i32,
    },
    #[error("unknown projection {0:?} (known: pipeline, forecast)")]
    UnknownProjection(String),
    #[error("a rebuild of projection {0} is already running")]
    RebuildInProgress(&'static str),
    /// The rebuild's swap could not take the old tables within its lock timeout on any of its
    /// attempts: queries that run for longer than that keep reading them. The rebuilt tables
    /// are left beside the live ones; the next rebuild starts them afresh.
    #[error(
        "projection {projection}: the rebuilt tables could not be swapped in, {attempts} attempts \
         each waited {lock_timeout:?} for long-running queries on the old tables to end; \
         rebuild again when they are done"
    )]
    SwapBlocked {
        projection: &'static str,
        attempts: u32,
        lock_timeout: Duration,
        #[source]
        source: ErrorSource,
    },
    #[error("cancelled by shutdown")]
    Cancelled,
    /// A test's fault hook asked the runner to stop here, as if the process had been killed.
    #[error("injected fault at {0:?}")]
    InjectedFault(FaultPoint),
}

impl ProjectorError {
    /// Worth retrying after a pause: the service may come back, or the projector be upgraded.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProjectorError::Unavailable(_)
                | ProjectorError::Messaging { .. }
                | ProjectorError::UnknownSchemaVersion { .. }
        )
    }

    /// Whether this is PostgreSQL refusing a statement it prepared before a migration changed
    /// the statement's result type (SQLSTATE 0A000, "cached plan must not change result type").
    /// Such a statement fails on every reuse, so the pool's prepared statements must be dropped
    /// before a retry can succeed.
    pub(crate) fn is_stale_statement(&self) -> bool {
        match self {
            ProjectorError::Unavailable(source) => eventstore::is_stale_statement(&**source),
            _ => false,
        }
    }

    /// Whether PostgreSQL refused a statement because a lock was not granted in time
    /// (`lock_timeout`).
    pub(crate) fn is_lock_timeout(&self) -> bool {
        match self {
            ProjectorError::Unavailable(source) => eventstore::database_error(&**source)
                .is_some_and(|error| *error.code() == SqlState::LOCK_NOT_AVAILABLE),
            _ => false,
        }
    }

    pub(crate) fn messaging(
        context: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> ProjectorError {
        ProjectorError::Messaging {
            context,
            source: Arc::new(source),
        }
    }
}

impl From<StoreError> for ProjectorError {
    fn from(error: StoreError) -> ProjectorError {
        match error {
            StoreError::Unavailable(source) => ProjectorError::Unavailable(source),
            StoreError::Unexpected(source) => ProjectorError::Unexpected(source),
        }
    }
}

impl From<tokio_postgres::Error> for ProjectorError {
    fn from(error: tokio_postgres::Error) -> ProjectorError {
        StoreError::from(error).into()
    }
}

impl From<deadpool_postgres::PoolError> for ProjectorError {
    fn from(error: deadpool_postgres::PoolError) -> ProjectorError {
        StoreError::from(error).into()
    }
}
