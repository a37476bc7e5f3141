//! The projector's own versioned migrations, recorded in `projector_migrations` so that they
//! never collide with the event store's list. Applied like the store's: in one transaction under
//! an advisory lock keyed on the schema, so that processes starting together serialize.

use deadpool_postgres::Pool;

use crate::error::ProjectorError;

pub use eventstore::Migration;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "checkpoints",
        sql: include_str!("../migrations/0001_checkpoints.sql"),
    },
    Migration {
        version: 2,
        name: "pipeline",
        sql: include_str!("../migrations/0002_pipeline.sql"),
    },
    Migration {
        version: 3,
        name: "forecast",
        sql: include_str!("../migrations/0003_forecast.sql"),
    },
    Migration {
        version: 4,
        name: "snapshots",
        sql: include_str!("../migrations/0004_snapshots.sql"),
    },
];

pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// Brings the read-model tables of `current_schema()` up to date. Idempotent and safe to run
/// from several processes at once.
pub async fn migrate(pool: &Pool) -> Result<(), ProjectorError> {
    Ok(eventstore::apply_migrations(pool, "projector_migrations", MIGRATIONS).await?)
}
