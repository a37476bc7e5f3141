//! Test helpers shared by the integration tests of every crate.
//!
//! It owns per-test isolation in PostgreSQL: [`TestDb`] gives each test its own freshly migrated
//! schema, reached through a pool whose every connection has `search_path` set to it, and drops
//! the schema when the test ends. Tests therefore run in parallel against one database without
//! seeing each other's events. It deliberately avoids tracing setup (the shared platform crate
//! owns telemetry) and NATS helpers.
//!
//! Read next: `eventstore::migrate`, which creates everything inside `current_schema()`.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::Pool;
use eventstore::EventStore;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// Used when `DATABASE_URL` is not set: the local development database.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/dealstream";

/// Connections per test pool. Tests run in parallel against one server whose connection limit
/// is usually 100, so each test gets a small share.
const POOL_SIZE: usize = 8;

/// A private, migrated schema for one test, dropped (with everything in it) on drop.
pub struct TestDb {
    /// Every connection of this pool has `search_path` set to [`TestDb::schema`].
    pub pool: Pool,
    /// `test_<uuid>`: a plain lower-case identifier, safe to interpolate unquoted.
    pub schema: String,
    /// The database URL with an `options` parameter that sets the same `search_path`, for
    /// spawned processes.
    pub url: String,
    /// The driver configuration behind `pool`, `search_path` included.
    config: Config,
    /// The configuration without the schema option, used to drop the schema.
    base_config: Config,
}

impl TestDb {
    /// A fresh schema with the event store's migrations applied.
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be reached or set up; the message names `DATABASE_URL`.
    pub async fn new() -> TestDb {
        let database = TestDb::unmigrated().await;
        if let Err(error) = eventstore::migrate(&database.pool).await {
            panic!(
                "migrating test schema {} failed: {}",
                database.schema,
                error_chain(&error)
            );
        }
        database
    }

    /// A fresh, empty schema: for tests of the migrations themselves.
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be reached or set up; the message names `DATABASE_URL`.
    pub async fn unmigrated() -> TestDb {
        let base_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let mut base_config = match Config::from_str(&base_url) {
            Ok(config) => config,
            Err(error) => panic!("DATABASE_URL={base_url} is not a valid PostgreSQL URL: {error}"),
        };
        if base_config.get_connect_timeout().is_none() {
            base_config.connect_timeout(Duration::from_secs(5));
        }
        let client = connect_creating_database(&base_config, &base_url).await;

        let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
        if let Err(error) = client
            .batch_execute(&format!("create schema {schema}"))
            .await
        {
            panic!(
                "creating schema {schema} via DATABASE_URL={base_url} failed: {}",
                error_chain(&error)
            );
        }

        let search_path_option = format!("-c search_path={schema}");
        let options = match base_config.get_options() {
            Some(existing) => format!("{existing} {search_path_option}"),
            None => search_path_option,
        };
        let mut config = base_config.clone();
        config.options(options.as_str());
        let separator = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{separator}options={}", percent_encode(&options));

        let pool = match eventstore::pool_from_config(config.clone(), POOL_SIZE) {
            Ok(pool) => pool,
            Err(error) => panic!("building a pool for DATABASE_URL={base_url} failed: {error}"),
        };
        TestDb {
            pool,
            schema,
            url,
            config,
            base_config,
        }
    }

    /// An event store on this schema (each call spawns its own appender, like another process
    /// would).
    pub fn store(&self) -> EventStore {
        EventStore::new(self.pool.clone())
    }

    /// The driver configuration, `search_path` included, for tests that need a connection of
    /// their own (for example to hold a transaction open or to LISTEN).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A connection outside the pool, with its driver task spawned on the current runtime.
    pub async fn connect(&self) -> Client {
        let (client, connection) = match self.config.connect(NoTls).await {
            Ok(pair) => pair,
            Err(error) => panic!(
                "connecting to the test database failed: {}",
                error_chain(&error)
            ),
        };
        tokio::spawn(async move {
            // The connection ends when the client is dropped; an error here surfaces to the
            // test through the client's own calls.
            let _ = connection.await;
        });
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.pool.close();
        let config = self.base_config.clone();
        let schema = self.schema.clone();
        // Drop cannot await, and blocking inside the test's runtime is not allowed, so the
        // schema is dropped from a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return Err(error.to_string()),
            };
            runtime.block_on(async move {
                let (client, connection) = config
                    .connect(NoTls)
                    .await
                    .map_err(|error| error_chain(&error))?;
                tokio::spawn(connection);
                // A transaction left open by a failed test would otherwise make this wait
                // forever; a leaked schema is the lesser harm.
                client
                    .batch_execute(&format!(
                        "set lock_timeout = '10s'; drop schema if exists {schema} cascade"
                    ))
                    .await
                    .map_err(|error| error_chain(&error))
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!(
                "warning: dropping test schema {} failed: {error}",
                self.schema
            ),
            Err(_) => eprintln!("warning: dropping test schema {} panicked", self.schema),
        }
    }
}

/// Connects to the configured database, creating it first if it does not exist. Several test
/// binaries may race to create it; losing that race is fine.
async fn connect_creating_database(config: &Config, url: &str) -> Client {
    match connect(config).await {
        Ok(client) => return client,
        Err(error) if error.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(error) => panic!(
            "cannot connect to PostgreSQL at DATABASE_URL={url} (set DATABASE_URL to a reachable \
             server): {}",
            error_chain(&error)
        ),
    }

    let database = config.get_dbname().unwrap_or("postgres").to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = match connect(&maintenance).await {
        Ok(client) => client,
        Err(error) => panic!(
            "database {database} does not exist and connecting to the maintenance database \
             `postgres` to create it failed (DATABASE_URL={url}): {}",
            error_chain(&error)
        ),
    };
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    match client
        .batch_execute(&format!("create database {quoted}"))
        .await
    {
        Ok(()) => {}
        // Another test process created it between our check and our create; pg_database's
        // unique index reports the same race as a unique violation.
        Err(error)
            if error.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
        Err(error) => panic!(
            "creating database {database} for DATABASE_URL={url} failed: {}",
            error_chain(&error)
        ),
    }
    match connect(config).await {
        Ok(client) => client,
        Err(error) => panic!(
            "cannot connect to PostgreSQL at DATABASE_URL={url}: {}",
            error_chain(&error)
        ),
    }
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub use platform::error_chain;

/// Percent-encodes a URL query value, keeping only unreserved characters as they are.
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
