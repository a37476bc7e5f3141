use testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_each_version_once() {
    let database = TestDb::unmigrated().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let pool = database.pool.clone();
            tokio::spawn(async move { eventstore::migrate(&pool).await })
        })
        .collect();
    for run in runs {
        run.await.expect("migration task").expect("migrate");
    }
    // And once more, sequentially: nothing left to do.
    eventstore::migrate(&database.pool)
        .await
        .expect("migrate again");

    let client = database.pool.get().await.expect("connection");
    let applied: Vec<(i32, String)> = client
        .query(
            "select version, name from schema_migrations order by version",
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let known: Vec<(i32, String)> = eventstore::migrations()
        .iter()
        .map(|migration| (migration.version, migration.name.to_owned()))
        .collect();
    assert_eq!(applied, known);

    let tables: Vec<String> = client
        .query(
            "select table_name::text from information_schema.tables
             where table_schema = $1 order by 1",
            &[&database.schema],
        )
        .await
        .expect("tables")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        tables,
        vec!["api_tokens", "commands", "events", "schema_migrations"]
    );
}

#[tokio::test]
async fn migrating_without_a_schema_on_the_search_path_fails_clearly() {
    let database = TestDb::unmigrated().await;
    let mut config = database.config().clone();
    config.options("-c search_path=no_such_schema_here");
    let pool = eventstore::pool_from_config(config, 1).expect("pool");
    let error = eventstore::migrate(&pool).await.expect_err("no schema");
    assert!(
        testkit::error_chain(&error).contains("search_path"),
        "{}",
        testkit::error_chain(&error)
    );
}

#[tokio::test]
async fn a_schema_too_long_for_its_notification_channel_is_refused_at_start_up() {
    let database = TestDb::new().await;
    // 60 bytes: a valid schema name, but `<schema>_events` exceeds PostgreSQL's 63.
    let schema = format!(
        "{}_{}",
        database.schema,
        "x".repeat(60 - database.schema.len() - 1)
    );
    let admin = database.connect().await;
    admin
        .batch_execute(&format!("create schema {schema}"))
        .await
        .expect("create the long schema");
    let base_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| testkit::DEFAULT_DATABASE_URL.to_owned());
    let separator = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{separator}options=-csearch_path%3D{schema}");
    let pool = eventstore::pool_from_url(&url, 1).expect("pool");

    let refused = eventstore::migrate(&pool)
        .await
        .expect_err("a schema whose channel is too long must be refused");
    let message = format!("{}", std::error::Error::source(&refused).expect("cause"));
    assert!(
        message.contains("too long") && message.contains(&schema),
        "unclear message: {message}"
    );
    drop(pool);
    admin
        .batch_execute(&format!("drop schema {schema} cascade"))
        .await
        .expect("drop the long schema");
}
