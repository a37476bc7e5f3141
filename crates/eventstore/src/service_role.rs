//! The least-privileged database role the services connect as.
//!
//! `dealstream migrate` runs as the owner of the event store's tables and then calls
//! [`grant_service_role`]. The service role may only read and append events: it is not the
//! owner of `events`, so it can neither alter, drop nor disable the append-only triggers, and it
//! holds no UPDATE, DELETE, TRUNCATE or TRIGGER privilege on it. It owns the read-model and
//! workflow tables instead, which are derived from the events and which a projection rebuild
//! replaces with fresh tables.

use deadpool_postgres::Pool;

use crate::error::StoreError;

/// Tables the owner keeps, with what the service role may do on each. Everything else in the
/// schema (read models, workflow state) is handed to the service role.
const OWNER_TABLES: [(&str, &str); 4] = [
    // Appends and reads only: the log is never edited.
    ("events", "select, insert"),
    // Handled command ids: recorded with their events, forgotten after the retention.
    ("commands", "select, insert, delete"),
    // Checked at start-up; only `dealstream migrate` (the owner) applies migrations.
    ("schema_migrations", "select"),
    // Verified on every request; only the owner (the `tokens` subcommand) creates or revokes.
    ("api_tokens", "select"),
];

/// Creates `role` (or updates it) with `password`, and gives it exactly what the services need in
/// the current schema of `pool`, which must connect as the owner of the event store's tables.
/// Running it again corrects whatever was granted by hand since.
pub async fn grant_service_role(
    pool: &Pool,
    role: &str,
    password: Option<&str>,
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let exists = transaction
        .query_opt("select 1 from pg_roles where rolname = $1", &[&role])
        .await?
        .is_some();
    let verb = if exists { "alter" } else { "create" };
    // `format` quotes the name and the password as PostgreSQL reads them, whatever they hold.
    let statement: String = transaction
        .query_one(
            &format!(
                "select format('{verb} role %I with login nosuperuser nocreatedb nocreaterole \
                 noreplication nobypassrls' || coalesce(' password ' || quote_literal($2::text), \
                 ''), $1::text)"
            ),
            &[&role, &password],
        )
        .await?
        .get(0);
    transaction.batch_execute(&statement).await?;
    let schema: String = transaction
        .query_one("select current_schema()::text", &[])
        .await?
        .get(0);
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let (role_name, schema_name) = (quoted(role), quoted(&schema));
    // Rebuilding a projection creates its fresh tables, hence CREATE on the schema. It gives no
    // power over tables the role does not own.
    transaction
        .batch_execute(&format!(
            "grant usage, create on schema {schema_name} to {role_name}"
        ))
        .await?;
    // A service started on a newer build before `migrate` ran applies the event store's new
    // migrations itself, and would own what they create; the owner takes those tables back.
    for (table, privileges) in OWNER_TABLES {
        transaction
            .batch_execute(&format!(
                "alter table {table} owner to current_user; \
                 revoke all on {table} from {role_name}; \
                 grant {privileges} on {table} to {role_name}"
            ))
            .await?;
    }
    let others = transaction
        .query(
            "select tablename::text from pg_tables where schemaname = current_schema() \
             and tablename <> all($1)",
            &[&OWNER_TABLES.map(|(table, _)| table).to_vec()],
        )
        .await?;
    for row in others {
        let table: String = row.get(0);
        transaction
            .batch_execute(&format!(
                "alter table {} owner to {role_name}",
                quoted(&table)
            ))
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}
