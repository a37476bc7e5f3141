//! The append-only PostgreSQL event store of dealstream.
//!
//! It owns the `events` and `commands` tables and their migrations, appending with optimistic
//! concurrency (several streams at once, all or nothing), idempotent command ids, and reading a
//! stream or the global log. Positions are handed out under one advisory lock per append
//! transaction, so they grow in commit order and a follower reading `position > last` never
//! skips an event; the group-commit appender in `appender` keeps that affordable. The events
//! table is also the outbox: the relay follows it (woken by `NOTIFY` on
//! [`EventStore::notify_channel`]) instead of a second copy of each event.
//!
//! What it deliberately avoids: any knowledge of the domain (events are opaque typed JSON, so
//! this crate does not depend on `domain`), publishing, projections, and hard-coding a schema
//! (everything lives in `current_schema()`, which is how tests isolate themselves).
//!
//! Read next: `appender` for the group-commit transaction, then `migrate` and the SQL files in
//! `migrations/`.

mod appender;
mod error;
mod migrate;
mod service_role;
mod store;
mod types;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use error::{
    AppendError, ErrorSource, StoreError, database_error, is_passing_code, is_stale_statement,
};
pub use migrate::{Migration, apply_migrations, migrate, migrations};
pub use service_role::grant_service_role;
pub use store::EventStore;
pub use types::{
    AppendOutcome, AppendRequest, ExpectedVersion, HandledCommand, NewEvent, POSITION_HEADER,
    RecordedEvent, StreamAppend, StreamVersion, category_of, entity_of,
};

/// How long a new connection may take before the attempt counts as unavailable, unless the URL
/// sets `connect_timeout` itself. Without it a blackholed host would hang callers for minutes.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection before getting Unavailable.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a connection pool (without TLS) from a `postgres://` URL. The URL may carry
/// `options=-csearch_path%3D<schema>` to place the store in another schema.
pub fn pool_from_url(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    let config = tokio_postgres::Config::from_str(url)?;
    pool_from_config(config, max_size)
}

/// Builds a connection pool (without TLS) from a driver configuration.
pub fn pool_from_config(
    mut config: tokio_postgres::Config,
    max_size: usize,
) -> Result<Pool, StoreError> {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    // A connection whose server vanished without a reset would otherwise hang its query, and
    // with it the group-commit appender, until the kernel gives up minutes later.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    #[cfg(target_os = "linux")]
    config.tcp_user_timeout(Duration::from_secs(60));
    // The server's side of the same: a session whose client vanished (a cut network, a host
    // that died) is noticed and ended within about a minute instead of the kernel's two hours,
    // which ends whatever it still held. Ignored on Unix sockets, where there is no network to
    // lose.
    let server_keepalives =
        "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3";
    let options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {server_keepalives}"),
        _ => server_keepalives.to_owned(),
    };
    config.options(&options);
    // The pool's own limit must not cut a connection attempt short of the driver's timeout.
    let create_timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
        + Duration::from_secs(1);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // Fast recycling skips a round trip per checkout; a dead connection shows up as an
            // Unavailable error on use, which callers must handle anyway.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(create_timeout))
        .build()
        .map_err(|error| StoreError::Unexpected(Arc::new(error)))
}

/// The notification channel of the store in `schema`: `<schema>_events`.
pub fn notify_channel_for_schema(schema: &str) -> String {
    format!("{schema}_events")
}

/// A `LISTEN` statement for `channel`, quoted so that the case-sensitive name is kept as is.
pub fn listen_statement(channel: &str) -> String {
    format!("LISTEN \"{}\"", channel.replace('"', "\"\""))
}
