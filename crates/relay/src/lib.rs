//! The relay: publishes every committed event of the PostgreSQL event store to NATS JetStream,
//! exactly once and in `position` order, including across crashes.
//!
//! It owns the JetStream stream (created or updated on start), the subject scheme and headers
//! ([`subject`]), the publish loop with its pipelined acks (`publisher`), the LISTEN/NOTIFY
//! wake-ups (`listener`), the relay's metrics ([`metrics`]) and the operators' `events tail`
//! ([`tail()`]), and which of several relay processes publishes (`leader`: a PostgreSQL
//! advisory lock; the others stand by). The stream is the relay's only checkpoint: on start and after every failure it
//! reads the stream's last message and continues after that event's position, so there is no
//! relay state that could drift from what JetStream holds.
//!
//! What it deliberately avoids: a second copy of events (the events table is the outbox), a
//! checkpoint table, gap detection in the store (positions become visible in order), polling in
//! a tight loop (NOTIFY wakes it, a slow poll is only the fallback), and consuming the stream
//! for anything but `tail`.
//!
//! Read next: `publisher` for the ordering and failure argument, then `stream`.

mod backoff;
mod config;
mod error;
mod leader;
mod listener;
pub mod metrics;
mod publisher;
mod stats;
mod stream;
pub mod subject;
mod tail;

use std::sync::Arc;

use async_nats::jetstream;
use eventstore::EventStore;
use platform::{CancellationToken, ConnectionUrl};

/// The NATS client every service shares, so the binary needs no NATS dependency of its own.
pub use async_nats::Client as NatsClient;
pub use config::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_POLL_INTERVAL, DEFAULT_READ_BATCH, FailPoint, RelayConfig,
};
pub use error::{BoxError, RelayError};
pub use leader::{ATTEMPT_INTERVAL, CHECK_INTERVAL, CHECK_TIMEOUT};
pub use stats::RelayStats;
pub use stream::consumer_lag;
pub use tail::{TailOptions, start_sequence, tail};

/// What `/readyz` reports about NATS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatsState {
    /// Connected to a server.
    Connected,
    /// Not connected yet, or reconnecting; publishing resumes on its own when it is back.
    Disconnected,
}

impl NatsState {
    pub fn is_connected(self) -> bool {
        self == NatsState::Connected
    }
}

/// The client's connection state, without any network round trip: cheap enough for every
/// `/readyz` request.
pub fn nats_state(client: &async_nats::Client) -> NatsState {
    match client.connection_state() {
        async_nats::connection::State::Connected => NatsState::Connected,
        async_nats::connection::State::Pending | async_nats::connection::State::Disconnected => {
            NatsState::Disconnected
        }
    }
}

/// Connects to NATS the way every dealstream service should: it returns at once even if the
/// server is down, and (re)connects in the background forever with capped exponential
/// backoff (100 ms doubling to 5 s), so that NATS being away never stops a process from starting.
pub async fn connect(nats_url: &ConnectionUrl) -> Result<async_nats::Client, RelayError> {
    async_nats::ConnectOptions::new()
        .name("dealstream")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(std::time::Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .connect(server_addresses(nats_url)?)
        .await
        .map_err(|error| match error.kind() {
            // Only a URL that cannot be parsed fails here; unreachable servers are retried.
            async_nats::ConnectErrorKind::ServerParse => {
                RelayError::Config(format!("NATS_URL {nats_url} is not usable: {error}"))
            }
            _ => RelayError::nats(error),
        })
}

/// `NATS_URL` may name several servers of a cluster, separated by commas; the client tries
/// them all and learns the others from the cluster itself.
fn server_addresses(nats_url: &ConnectionUrl) -> Result<Vec<async_nats::ServerAddr>, RelayError> {
    nats_url
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|error| {
                RelayError::Config(format!("NATS_URL {nats_url} is not usable: {error}"))
            })
        })
        .collect()
}

/// The wait before connection attempt number `attempts` (counted from 1 by the client): none for
/// the first, then 100 ms doubling up to 5 s.
fn reconnect_delay(attempts: usize) -> std::time::Duration {
    if attempts <= 1 {
        return std::time::Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    (DEFAULT_BACKOFF_MIN * 2u32.pow(exponent)).min(DEFAULT_BACKOFF_MAX)
}

/// Runs the relay until `shutdown` is cancelled: connects to NATS, then publishes as
/// [`run_with_client`] does.
pub async fn run(
    config: RelayConfig,
    store: EventStore,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    config.validate()?;
    let client = connect(&config.nats_url).await?;
    run_with_client(config, client, store, shutdown).await
}

/// Runs the relay on an existing NATS client (so `/readyz` can watch the same connection) until
/// `shutdown` is cancelled.
///
/// Several relays may run against one store: they take turns through a PostgreSQL advisory lock
/// (`leader`), and only the holder publishes; the others stand by and take over within about a
/// second of the holder's session ending. [`RelayStats::is_active`] tells which one this is.
///
/// Returns Ok after a clean shutdown. NATS or PostgreSQL being unavailable is never an error
/// here: the relay waits with capped backoff and catches up when they return. It returns an
/// error only for what no retry can fix (see [`RelayError::is_retryable`]).
pub async fn run_with_client(
    config: RelayConfig,
    client: async_nats::Client,
    store: EventStore,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    config.validate()?;
    let metrics = metrics::RelayMetrics::register();
    if !config.exclusive {
        config.stats.set_active(true);
        metrics.active(true);
        return publish(config, client, store, shutdown).await;
    }
    let Some(key) = lock_key(&config, &store, &shutdown).await else {
        return Ok(());
    };
    loop {
        config.stats.set_active(false);
        metrics.active(false);
        let Some(leadership) = leader::acquire(&config.database, key, &shutdown).await else {
            return Ok(());
        };
        tracing::info!(
            stream = %config.stream_name,
            "this relay holds the lock and becomes the active publisher"
        );
        config.stats.set_active(true);
        metrics.became_active();
        let term = shutdown.child_token();
        let publishing = publish(config.clone(), client.clone(), store.clone(), term.clone());
        tokio::pin!(publishing);
        let outcome = tokio::select! {
            outcome = &mut publishing => outcome,
            () = leadership.watch(&term) => {
                config.stats.set_active(false);
                metrics.active(false);
                term.cancel();
                // A read stuck on an unreachable store must not keep a former publisher alive;
                // dropping it abandons its in-flight publishes, which the chain makes harmless.
                tokio::time::timeout(config.ack_timeout * 2, &mut publishing)
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        drop(leadership);
        config.stats.set_active(false);
        metrics.active(false);
        if shutdown.is_cancelled() {
            return outcome;
        }
        outcome?;
        tracing::warn!("this relay lost the lock; standing by");
    }
}

/// The lock key of this deployment, which needs the store's schema; None on shutdown.
async fn lock_key(
    config: &RelayConfig,
    store: &EventStore,
    shutdown: &CancellationToken,
) -> Option<i64> {
    let mut backoff = backoff::Backoff::new(config.backoff_min, config.backoff_max);
    loop {
        match store.notify_channel().await {
            Ok(channel) => return Some(leader::lock_key(&channel, config.stream_name.as_str())),
            Err(error) => {
                tracing::warn!(error = %error, "cannot name the relay lock yet");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Publishes until `shutdown`: the listener and the publish loop of one active term.
async fn publish(
    config: RelayConfig,
    client: async_nats::Client,
    store: EventStore,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    // The listener stops with the relay, whichever way the relay ends.
    let listener_shutdown = shutdown.child_token();
    let _stop_listener = listener_shutdown.clone().drop_guard();
    let wakeup = Arc::new(listener::Wakeup::default());
    let listener = listener::Listener {
        database: config.database.clone(),
        store: store.clone(),
        wakeup: wakeup.clone(),
        stats: config.stats.clone(),
        backoff: backoff::Backoff::new(config.backoff_min, config.backoff_max),
    };
    let listener_task = tokio::spawn(listener.run(listener_shutdown.clone()));

    let jetstream = jetstream::ContextBuilder::new()
        .timeout(config.ack_timeout)
        .ack_timeout(config.ack_timeout)
        // Acks of an abandoned pipeline keep their permits until they time out, so the
        // client's window is larger than ours to let the next session start at full depth.
        .max_ack_inflight(config.max_in_flight.saturating_mul(4))
        .backpressure_on_inflight(true)
        .build(client.clone());
    let publisher = publisher::Publisher {
        config,
        client,
        jetstream,
        store,
        wakeup,
        metrics: metrics::RelayMetrics::register(),
        shutdown,
    };
    let outcome = publisher.run().await;
    listener_shutdown.cancel();
    if let Err(error) = listener_task.await {
        tracing::error!(error = %error, "relay listener task failed");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_url_may_list_several_servers() {
        let url = ConnectionUrl::parse("NATS_URL", "nats://a:4222, nats://b:4223").unwrap();
        let servers = server_addresses(&url).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].port(), 4223);
        let bad = ConnectionUrl::parse("NATS_URL", "nats://a:4222,nats://b:x").unwrap();
        assert!(matches!(server_addresses(&bad), Err(RelayError::Config(_))));
    }

    #[test]
    fn the_first_connection_attempt_is_immediate_and_later_ones_back_off() {
        let delays: Vec<u128> = (1..=9)
            .map(|attempt| reconnect_delay(attempt).as_millis())
            .collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(reconnect_delay(usize::MAX), DEFAULT_BACKOFF_MAX);
    }
}
