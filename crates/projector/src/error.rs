//! The projector's error, classified the way callers act on it: retry later (database or NATS
//! unavailable), stop (corrupt or unexpected), or a condition the caller asked for.

use std::error::Error as StdError;
use std::sync::Arc;

use eventstore::StoreError;

use crate::runner::FaultPoint;

pub type ErrorSource = Arc<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectorError {
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
