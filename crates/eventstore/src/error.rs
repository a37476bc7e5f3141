//! Error types and the classification of driver and pool failures.
//!
//! Callers match on the category (conflict, fingerprint mismatch, unavailable, unexpected), never
//! on message text. Unavailable means "worth retrying later": the database could not be reached,
//! the pool timed out, or the server shed the connection. Everything else the driver reports is
//! unexpected and keeps its source for the logs.

use std::error::Error as StdError;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::error::{DbError, SqlState};
use uuid::Uuid;

use crate::types::ExpectedVersion;

/// The underlying cause of an unavailable or unexpected error.
///
/// Shared rather than boxed because one failed group-commit transaction answers every request
/// of the batch with the same cause.
pub type ErrorSource = Arc<dyn StdError + Send + Sync + 'static>;

/// Why an append was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// A stream's current version did not match the request's expectation; nothing was written
    /// for any stream of the request.
    #[error("version conflict on stream {stream_id}: expected {expected}, actual version {actual}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        /// The stream's version when the request was checked; 0 means the stream has no events.
        actual: i64,
    },
    /// The command id was already handled with a different fingerprint, so this is a different
    /// command reusing an id rather than a retry.
    #[error("command {command_id} was already handled with a different fingerprint")]
    FingerprintMismatch { command_id: Uuid },
    /// The request's business time is after the moment it would be recorded: history cannot
    /// be imported from the future.
    #[error("occurred_at {occurred_at} is after the time of recording {recorded_at}")]
    OccurredInTheFuture {
        occurred_at: DateTime<Utc>,
        recorded_at: DateTime<Utc>,
    },
    /// The request's business time is before the last event of one of its streams; business
    /// time never decreases within a stream.
    #[error(
        "occurred_at {occurred_at} is before {last_occurred_at}, when the last event of stream \
         {stream_id} occurred"
    )]
    OccurredBeforeStreamHead {
        stream_id: String,
        occurred_at: DateTime<Utc>,
        last_occurred_at: DateTime<Utc>,
    },
    /// The database could not be reached or the appender is gone; the append may be retried with
    /// the same command id, which makes the retry safe even if the first attempt committed.
    #[error("event store unavailable")]
    Unavailable(#[source] ErrorSource),
    /// Anything else, such as data the database refuses (for example `\u0000` in a JSON string).
    #[error("unexpected event store error")]
    Unexpected(#[source] ErrorSource),
}

/// Why a read or a migration failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("event store unavailable")]
    Unavailable(#[source] ErrorSource),
    #[error("unexpected event store error")]
    Unexpected(#[source] ErrorSource),
}

impl StoreError {
    pub(crate) fn message(message: impl Into<String>) -> StoreError {
        StoreError::Unexpected(Arc::new(Message(message.into())))
    }
}

impl From<StoreError> for AppendError {
    fn from(error: StoreError) -> AppendError {
        match error {
            StoreError::Unavailable(source) => AppendError::Unavailable(source),
            StoreError::Unexpected(source) => AppendError::Unexpected(source),
        }
    }
}

/// A plain-text cause for failures that have no library error behind them.
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl std::fmt::Display for Message {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl StdError for Message {}

/// Whether a driver error is worth retrying later: the server could not be reached or dropped
/// us, or it refused the statement for a reason that passes by itself.
pub(crate) fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(db_error) = error.as_db_error() {
        return is_passing_code(db_error.code());
    }
    // tokio-postgres keeps its error kinds private. A failure with an I/O error underneath is a
    // transport failure; the timeout kind has no source, so it is recognised by its fixed text.
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    let text = error.to_string();
    text.starts_with("timeout waiting for server")
        || text.starts_with("error connecting to server")
        || text.starts_with("error communicating with the server")
}

/// Whether PostgreSQL refused a statement for a reason that passes by itself, so that running it
/// again later can succeed. Corruption (`XX001`, `XX002`), a broken statement (class 42) or a
/// value the server rejects (class 22) are not: retrying those would hide a defect forever.
pub fn is_passing_code(code: &SqlState) -> bool {
    let code = code.code();
    // 08: connection exception. 40: transaction rollback (serialization failure, deadlock): the
    // same transaction run again normally succeeds. 53: insufficient resources (disk full, out
    // of memory, too many connections).
    code.starts_with("08")
        || code.starts_with("40")
        || code.starts_with("53")
        || [
            // A DBA's statement_timeout, or pg_cancel_backend.
            SqlState::QUERY_CANCELED,
            // lock_timeout: also how an append answers while a frozen writer holds the append
            // lock.
            SqlState::LOCK_NOT_AVAILABLE,
            // "cached plan must not change result type" after a migration; PostgreSQL uses no
            // more specific code for it (see `StoreError::is_stale_statement`).
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
pub fn database_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a DbError> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(database) = current.downcast_ref::<DbError>() {
            return Some(database);
        }
        cause = current.source();
    }
    None
}

/// Whether `error` is PostgreSQL refusing a statement it prepared before a migration changed the
/// statement's result type. Such a statement fails on every reuse on its connection, so the
/// pool's prepared statements must be dropped before a retry can succeed.
pub fn is_stale_statement(error: &(dyn StdError + 'static)) -> bool {
    database_error(error).is_some_and(|error| *error.code() == SqlState::FEATURE_NOT_SUPPORTED)
}

/// Keeps the server's own error as the source when there is one, since the driver's wrapper only
/// says "db error".
fn pg_source(error: tokio_postgres::Error) -> ErrorSource {
    if error.as_db_error().is_some() {
        if let Some(source) = error.into_source() {
            return Arc::from(source);
        }
        // into_source consumed the error; this branch is unreachable because as_db_error
        // returned Some, which means a source exists.
        return Arc::new(Message("database error without details".to_owned()));
    }
    Arc::new(error)
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> StoreError {
        if is_transient(&error) {
            StoreError::Unavailable(pg_source(error))
        } else {
            StoreError::Unexpected(pg_source(error))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> StoreError {
        use deadpool_postgres::PoolError;
        match error {
            // Failing to create a connection is the database being unreachable (or refusing
            // us), whatever the driver's detailed reason.
            PoolError::Timeout(_)
            | PoolError::Backend(_)
            | PoolError::Closed
            | PoolError::PostCreateHook(_) => StoreError::Unavailable(Arc::new(error)),
            PoolError::NoRuntimeSpecified => StoreError::Unexpected(Arc::new(error)),
        }
    }
}
