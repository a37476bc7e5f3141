//! The projector's error, classified the way callers act on it: retry later (database or NATS
//! unavailable, or PostgreSQL refusing a statement for a passing reason), stop (corrupt or
//! unexpected), or a condition the caller asked for.
//!
//! The event store calls only connection failures "unavailable"; a statement the server refused
//! comes back "unexpected" whatever the reason. A projector that stopped the node on a DBA's
//! `statement_timeout` or a deadlock would turn a passing hiccup into an outage, so those
//! refusals are sorted here by SQLSTATE ([`is_passing_refusal`]). The relay keeps the same list
//! (`relay::error`); both would shrink to nothing if the store classified them itself.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use eventstore::StoreError;
use tokio_postgres::error::{DbError, SqlState};

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
            ProjectorError::Unavailable(source) => database_error(&**source)
                .is_some_and(|error| *error.code() == SqlState::FEATURE_NOT_SUPPORTED),
            _ => false,
        }
    }

    /// Whether PostgreSQL refused a statement because a lock was not granted in time
    /// (`lock_timeout`).
    pub(crate) fn is_lock_timeout(&self) -> bool {
        match self {
            ProjectorError::Unavailable(source) => database_error(&**source)
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
            StoreError::Unexpected(source) if is_passing_refusal(&*source) => {
                ProjectorError::Unavailable(source)
            }
            StoreError::Unexpected(source) => ProjectorError::Unexpected(source),
        }
    }
}

/// Whether PostgreSQL refused a statement for a reason that passes by itself, so that running it
/// again later can succeed. Corruption (`XX001`, `XX002`), a broken statement (class 42) or a
/// value the server rejects (class 22) are not: retrying those would hide a defect forever.
fn is_passing_refusal(error: &(dyn StdError + 'static)) -> bool {
    let Some(code) = database_error(error).map(|error| error.code().code()) else {
        return false;
    };
    // 08: connection exception. 40: transaction rollback (serialization failure, deadlock): the
    // same transaction run again normally succeeds. 53: insufficient resources (disk full, out
    // of memory, too many connections).
    code.starts_with("08")
        || code.starts_with("40")
        || code.starts_with("53")
        || [
            // A DBA's statement_timeout, or pg_cancel_backend.
            SqlState::QUERY_CANCELED,
            // lock_timeout, or NOWAIT.
            SqlState::LOCK_NOT_AVAILABLE,
            // "cached plan must not change result type" after a migration; PostgreSQL uses no
            // more specific code for it (see `ProjectorError::is_stale_statement`).
            SqlState::FEATURE_NOT_SUPPORTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::IDLE_SESSION_TIMEOUT,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            SqlState::SYSTEM_ERROR,
            SqlState::IO_ERROR,
            SqlState::SNAPSHOT_TOO_OLD,
        ]
        .iter()
        .any(|passing| passing.code() == code)
        // transaction_timeout (PostgreSQL 17), newer than the driver's list of codes.
        || code == "25P04"
}

/// The server's own error anywhere in the chain.
fn database_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a DbError> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(database) = current.downcast_ref::<DbError>() {
            return Some(database);
        }
        cause = current.source();
    }
    None
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
