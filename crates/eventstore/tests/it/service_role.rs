//! The services' database role: it reads and appends events and nothing more on them.

use eventstore::{EventStore, ExpectedVersion};
use testkit::{TestDb, error_chain};
use tokio_postgres::NoTls;

use crate::{events, new_stream, single};

/// What the role tries on the event store's tables; each must be refused.
const FORBIDDEN: [&str; 12] = [
    "update events set event_type = 'Rewritten'",
    "delete from events",
    "truncate events",
    "alter table events disable trigger all",
    "alter table events disable trigger events_refuse_update_delete",
    "alter table events add column forged text",
    "drop table events",
    "drop trigger events_refuse_truncate on events",
    "create trigger forged before insert on events for each row execute function events_refuse_change()",
    "insert into api_tokens (id, actor, role, token_hash) values (gen_random_uuid(), 'mallory', 'admin', decode(repeat('00', 32), 'hex'))",
    "update commands set outcome = outcome",
    "alter table api_tokens add column forged text",
];

#[tokio::test]
async fn the_service_role_reads_and_appends_events_and_nothing_else() {
    let database = TestDb::new().await;
    database
        .pool
        .get()
        .await
        .expect("pooled connection")
        .batch_execute("create table read_model_sample (id int primary key)")
        .await
        .expect("creating a read-model table");
    let role = format!("ds_service_{}", uuid::Uuid::now_v7().simple());
    let granted =
        eventstore::grant_service_role(&database.pool, &role, Some("it's \"quoted\"")).await;
    let mut failures = Vec::new();
    if let Err(error) = &granted {
        failures.push(format!("granting failed: {}", error_chain(error)));
    } else {
        // As if a service had created the tokens table before the owner migrated.
        let owner = database.pool.get().await.expect("pooled connection");
        owner
            .batch_execute(&format!("alter table api_tokens owner to {role}"))
            .await
            .expect("handing a table to the role");
        // Granting again is how `dealstream migrate` keeps the role up to date.
        if let Err(error) = eventstore::grant_service_role(&database.pool, &role, None).await {
            failures.push(format!("granting again failed: {}", error_chain(&error)));
        }
        failures.extend(exercise(&database, &role).await);
    }
    let owner = database.pool.get().await.expect("pooled connection");
    owner
        .batch_execute(&format!("drop owned by {role}; drop role {role}"))
        .await
        .expect("dropping the test's role");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Connects as `role` and tries everything; returns what went differently than it should.
async fn exercise(database: &TestDb, role: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let mut config = database.config().clone();
    config.user(role);
    config.password("it's \"quoted\"");
    let (client, connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(error) => return vec![format!("connecting as {role}: {}", error_chain(&error))],
    };
    tokio::spawn(connection);
    let pool = match eventstore::pool_from_config(config.clone(), 2) {
        Ok(pool) => pool,
        Err(error) => return vec![format!("a pool as {role}: {error}")],
    };
    let store = EventStore::new(pool);
    let stream = new_stream("lead");
    if let Err(error) = store
        .append(single(&stream, ExpectedVersion::NoStream, events(2)))
        .await
    {
        failures.push(format!("appending as the service role failed: {error:?}"));
    }
    match store.read_stream(&stream).await {
        Ok(read) if read.len() == 2 => {}
        other => failures.push(format!("reading back as the service role: {other:?}")),
    }
    for statement in FORBIDDEN {
        match client.batch_execute(statement).await {
            Ok(()) => failures.push(format!("{role} may run {statement:?}")),
            Err(error) => {
                let code = error.code().map(|code| code.code().to_owned());
                // 42501: insufficient privilege, including "must be owner of table".
                if code.as_deref() != Some("42501") {
                    failures.push(format!(
                        "{statement:?} failed for another reason than privileges: {}",
                        error_chain(&error)
                    ));
                }
            }
        }
    }
    // The derived tables are the service's own: a rebuild may replace them.
    if let Err(error) = client
        .batch_execute(
            "create table read_model_sample_fresh (id int primary key); \
             drop table read_model_sample; \
             alter table read_model_sample_fresh rename to read_model_sample",
        )
        .await
    {
        failures.push(format!(
            "swapping a read-model table as the service role failed: {}",
            error_chain(&error)
        ));
    }
    failures
}
