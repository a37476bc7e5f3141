//! One active publisher among several relay processes: a session-level PostgreSQL advisory lock
//! held on a dedicated connection.
//!
//! Why a lock in PostgreSQL rather than a lease in NATS: the relay cannot publish without the
//! store anyway, so a relay cut off from PostgreSQL is useless as a publisher, and the server
//! releases a session lock the moment the session ends (a killed process closes its socket), so
//! a standby takes over within one [`ATTEMPT_INTERVAL`] plus a resume. A lease would need a TTL,
//! which is a trade between slow takeover and spurious ones.
//!
//! The lock is a liveness device, not the safety argument: ordering and exactly-once still rest
//! on `Nats-Expected-Last-Sequence` (see `publisher`). Two publishers at once, after a partition
//! the server has not noticed yet, refuse each other's stale publishes and never reorder or
//! duplicate; that case is tested with the lock switched off ([`RelayConfig::exclusive`]).
//!
//! The holder checks its session every [`CHECK_INTERVAL`] and stops publishing when a check fails
//! or takes longer than [`CHECK_TIMEOUT`], so a relay partitioned from PostgreSQL steps down
//! within about 3 seconds on its side too.

use std::time::Duration;

use futures::FutureExt;
use platform::CancellationToken;
use tokio_postgres::NoTls;

use crate::backoff::sleep;
use crate::error::BoxError;

/// How often a standby tries to take the lock.
pub const ATTEMPT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the active relay checks that its lock session is alive.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A check that takes longer counts as a lost session.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The lock's key: the same for every relay of one deployment (one store schema, one stream),
/// different for deployments or test schemas sharing a database. FNV-1a rather than the
/// standard hasher, whose output may change between Rust releases: an old and a new build
/// running side by side during an upgrade must compute the same key.
pub(crate) fn lock_key(notify_channel: &str, stream_name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"dealstream-relay/"
        .iter()
        .chain(notify_channel.as_bytes())
        .chain(b"/")
        .chain(stream_name.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// The lock, held while this value lives: dropping it closes the session, which releases it.
pub(crate) struct Leadership {
    client: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Waits until this process holds the lock (Some) or shutdown is requested (None). Failures to
/// reach PostgreSQL are logged and retried at the same pace.
pub(crate) async fn acquire(
    database: &tokio_postgres::Config,
    key: i64,
    shutdown: &CancellationToken,
) -> Option<Leadership> {
    let mut announced = false;
    loop {
        match try_acquire(database, key).await {
            Ok(Some(leadership)) => return Some(leadership),
            Ok(None) => {
                if !announced {
                    tracing::info!(key, "another relay is publishing; standing by");
                    announced = true;
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot reach PostgreSQL to take the relay lock")
            }
        }
        if !sleep(ATTEMPT_INTERVAL, shutdown).await {
            return None;
        }
    }
}

async fn try_acquire(
    database: &tokio_postgres::Config,
    key: i64,
) -> Result<Option<Leadership>, BoxError> {
    let mut database = database.clone();
    // A peer that vanished without a FIN must not hold the lock for the system's two hours.
    database
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .connect_timeout(CHECK_TIMEOUT)
        .application_name("dealstream relay lock");
    let (client, connection) =
        tokio::time::timeout(CHECK_TIMEOUT, database.connect(NoTls)).await??;
    let connection = tokio::spawn(connection.map(|_| ()));
    let leadership = Leadership { client, connection };
    let row = tokio::time::timeout(
        CHECK_TIMEOUT,
        leadership
            .client
            .query_one("select pg_try_advisory_lock($1)", &[&key]),
    )
    .await??;
    Ok(row.get::<_, bool>(0).then_some(leadership))
}

impl Leadership {
    /// Returns when the lock session is lost or fails a check, or when `stop` is cancelled.
    pub(crate) async fn watch(&self, stop: &CancellationToken) {
        loop {
            if !sleep(CHECK_INTERVAL, stop).await {
                return;
            }
            if self.connection.is_finished() {
                tracing::warn!("the relay lock session ended; stepping down");
                return;
            }
            match tokio::time::timeout(CHECK_TIMEOUT, self.client.simple_query("select 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "the relay lock session failed; stepping down");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        timeout = ?CHECK_TIMEOUT,
                        "the relay lock session does not answer; stepping down"
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_stable_and_tells_deployments_apart() {
        let key = lock_key("dealstream_public", "DEALSTREAM_EVENTS");
        assert_eq!(key, lock_key("dealstream_public", "DEALSTREAM_EVENTS"));
        assert_ne!(key, lock_key("dealstream_other", "DEALSTREAM_EVENTS"));
        assert_ne!(key, lock_key("dealstream_public", "OTHER_EVENTS"));
        // A fixed value, so a change of the hash (which would let an old and a new build publish
        // side by side during an upgrade) fails here first.
        assert_eq!(lock_key("", ""), 0x99af_ea39_4039_ca4d_u64 as i64);
    }
}
