//! Versioned schema migrations, embedded in the binary.
//!
//! All pending migrations are applied in one transaction under a transaction-scoped advisory lock
//! keyed on the current schema, so services starting at the same moment serialize: the first
//! applies them, the others wait and then find nothing left to do. A failure rolls everything
//! back, so the schema is never left half-migrated.

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;

use crate::error::StoreError;

/// One embedded migration. Versions are applied in ascending order and never edited once
/// released; a change is a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "commands",
        sql: include_str!("../migrations/0002_commands.sql"),
    },
    Migration {
        version: 3,
        name: "append_only",
        sql: include_str!("../migrations/0003_append_only.sql"),
    },
    Migration {
        version: 4,
        name: "commands_retention",
        sql: include_str!("../migrations/0004_commands_retention.sql"),
    },
    Migration {
        version: 5,
        name: "occurred_at",
        sql: include_str!("../migrations/0005_occurred_at.sql"),
    },
    Migration {
        version: 6,
        name: "api_tokens",
        sql: include_str!("../migrations/0006_api_tokens.sql"),
    },
];

/// The migrations this build knows, in the order they are applied.
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// Brings `current_schema()` up to date. Idempotent, and safe when several processes run it at
/// once.
pub async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    apply_migrations(pool, "schema_migrations", MIGRATIONS).await?;
    check_notify_channel(pool).await
}

/// PostgreSQL refuses a notification channel longer than an identifier (63 bytes), and every
/// append notifies: a schema name too long for its channel would fail every append after a
/// clean start. Refusing to start says why, once.
async fn check_notify_channel(pool: &Pool) -> Result<(), StoreError> {
    const MAX_CHANNEL_BYTES: usize = 63;
    let client = pool.get().await?;
    let schema: String = client
        .query_one("select current_schema()::text", &[])
        .await?
        .get(0);
    let channel = crate::notify_channel_for_schema(&schema);
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(StoreError::message(format!(
            "schema name {schema:?} is too long: its notification channel {channel:?} has {} \
             bytes and PostgreSQL allows {MAX_CHANNEL_BYTES}; use a schema name of at most {} \
             bytes",
            channel.len(),
            MAX_CHANNEL_BYTES - (channel.len() - schema.len())
        )));
    }
    Ok(())
}

/// Applies the `migrations` that the ledger table `ledger` (created if missing) does not list,
/// in one transaction under an advisory lock keyed on the schema and the ledger. Every crate
/// that owns tables (the store, the projector, the workflow) keeps its own list and ledger, so
/// their versions never collide, and they share this one runner.
pub async fn apply_migrations(
    pool: &Pool,
    ledger: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    // Read committed so that, after waiting for the lock, the next statement's fresh snapshot
    // sees the migrations another process just committed.
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?;

    // Without a schema on the search path the lock key below would be NULL, which takes no lock
    // at all, and the tables would have nowhere to go.
    let schema: Option<String> = transaction
        .query_one("select current_schema()", &[])
        .await?
        .get(0);
    let Some(schema) = schema else {
        return Err(StoreError::message(
            "no schema on the search_path: create it or fix the connection's search_path",
        ));
    };

    transaction
        .execute(
            "select pg_advisory_xact_lock(hashtext(current_schema() || '.' || $1))",
            &[&ledger],
        )
        .await?;
    transaction
        .batch_execute(&format!(
            "create table if not exists {ledger} (
                version    int primary key,
                name       text not null,
                applied_at timestamptz not null default clock_timestamp()
            )"
        ))
        .await?;
    let applied: Vec<i32> = transaction
        .query(&format!("select version from {ledger}"), &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    for migration in migrations {
        if applied.contains(&migration.version) {
            continue;
        }
        tracing::info!(
            schema = %schema,
            ledger,
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                &format!("insert into {ledger} (version, name) values ($1, $2)"),
                &[&migration.version, &migration.name],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}
