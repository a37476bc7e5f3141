//! The projector's own versioned migrations, recorded in `projector_migrations` so that they
//! never collide with the event store's list. Applied like the store's: in one transaction under
//! an advisory lock keyed on the schema, so that processes starting together serialize.

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;

use crate::error::ProjectorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

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
];

pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// Brings the read-model tables of `current_schema()` up to date. Idempotent and safe to run
/// from several processes at once.
pub async fn migrate(pool: &Pool) -> Result<(), ProjectorError> {
    let mut client = pool.get().await?;
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?;
    let schema: Option<String> = transaction
        .query_one("select current_schema()", &[])
        .await?
        .get(0);
    if schema.is_none() {
        return Err(ProjectorError::Corrupt(
            "no schema on the search_path: create it or fix the connection's search_path"
                .to_owned(),
        ));
    }
    transaction
        .execute(
            "select pg_advisory_xact_lock(hashtext(current_schema() || '.projector.migrate'))",
            &[],
        )
        .await?;
    transaction
        .batch_execute(
            "create table if not exists projector_migrations (
                version    int primary key,
                name       text not null,
                applied_at timestamptz not null default clock_timestamp()
            )",
        )
        .await?;
    let applied: Vec<i32> = transaction
        .query("select version from projector_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying projector migration"
        );
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                "insert into projector_migrations (version, name) values ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}
