//! What the relay needs to know: where NATS and PostgreSQL are, which stream and subject prefix
//! to use, and the few tuning knobs, each with the default the service runs with.

use std::str::FromStr;
use std::time::Duration;

use platform::{ConnectionUrl, Settings, StreamName, SubjectPrefix};

use crate::error::RelayError;
use crate::stats::RelayStats;

/// Default JetStream de-duplication window. It must cover the time between a publish whose ack
/// was lost and the relay's next start, when the same event id is published again; a crash-loop
/// or a NATS outage longer than that is still safe, because the expected-last-sequence check
/// refuses a stale duplicate, but it would then be an error to resolve rather than a silent
/// duplicate ack.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Default number of publishes awaiting their ack at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default number of events read from the store per query.
pub const DEFAULT_READ_BATCH: i64 = 512;
/// Default fallback poll interval, for a NOTIFY lost while the LISTEN connection was down.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default wait for one publish ack or JetStream API answer.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default first retry delay after a failure.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Default cap on the retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The relay's configuration. Build it with [`RelayConfig::from_settings`] or
/// [`RelayConfig::new`] and adjust fields as needed.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// `NATS_URL`; used by [`run`](crate::run) to connect.
    pub nats_url: ConnectionUrl,
    /// Connection settings for the dedicated LISTEN connection. It is not taken from the pool:
    /// a pooled connection cannot hand its notifications to us and would be recycled under us.
    pub database: tokio_postgres::Config,
    /// `DEALSTREAM_NATS_STREAM`.
    pub stream_name: StreamName,
    /// `DEALSTREAM_SUBJECT_PREFIX`; events go to `<prefix>.events.<category>.<entity>.<type>`.
    pub subject_prefix: SubjectPrefix,
    /// The stream's de-duplication window (see [`DEFAULT_DUPLICATE_WINDOW`]).
    pub duplicate_window: Duration,
    /// Publishes awaiting their ack at once; at least 1.
    pub max_in_flight: usize,
    /// Events per store read; at least 1.
    pub read_batch: i64,
    /// Fallback poll interval when no NOTIFY arrives.
    pub poll_interval: Duration,
    /// Wait for one ack or JetStream API answer before counting NATS as unavailable.
    pub ack_timeout: Duration,
    /// First retry delay; doubled after each consecutive failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Cap on the retry delay.
    pub backoff_max: Duration,
    /// Counters the relay updates as it goes; clone it before `run` to watch them.
    pub stats: RelayStats,
    /// Take the relay lock before publishing, so that one relay of several publishes at a time
    /// (true by default). Only tests turn it off, to show that two publishers at once still
    /// neither reorder nor duplicate.
    pub exclusive: bool,
    /// Fault injection for crash tests: `run` returns [`RelayError::FaultInjected`] at this
    /// point, abandoning in-flight publishes as a crash would. Always `None` in production.
    pub fail_point: Option<FailPoint>,
}

/// Where a crash test makes the relay stop (see [`RelayConfig::fail_point`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailPoint {
    /// Just before publishing the event at this position; earlier events may still be
    /// awaiting their acks.
    BeforePublish(i64),
    /// After the event at this position was published and flushed to the server, before its
    /// ack is read.
    AfterPublishBeforeAck(i64),
    /// Right after the ack of the event at this position was read, with later events of the
    /// same batch still in flight.
    AfterAck(i64),
}

impl RelayConfig {
    /// The defaults above for the given servers, stream and prefix.
    pub fn new(
        nats_url: ConnectionUrl,
        database: tokio_postgres::Config,
        stream_name: StreamName,
        subject_prefix: SubjectPrefix,
    ) -> RelayConfig {
        RelayConfig {
            nats_url,
            database,
            stream_name,
            subject_prefix,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            read_batch: DEFAULT_READ_BATCH,
            poll_interval: DEFAULT_POLL_INTERVAL,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            stats: RelayStats::default(),
            exclusive: true,
            fail_point: None,
        }
    }

    /// The relay's configuration from the process settings.
    pub fn from_settings(settings: &Settings) -> Result<RelayConfig, RelayError> {
        let database = tokio_postgres::Config::from_str(settings.database_url.expose())
            .map_err(|error| RelayError::Config(format!("DATABASE_URL is not usable: {error}")))?;
        Ok(RelayConfig::new(
            settings.nats_url.clone(),
            database,
            settings.nats_stream.clone(),
            settings.subject_prefix.clone(),
        ))
    }

    pub(crate) fn validate(&self) -> Result<(), RelayError> {
        if self.max_in_flight == 0 {
            return Err(RelayError::Config(
                "max_in_flight must be at least 1".into(),
            ));
        }
        if self.read_batch <= 0 {
            return Err(RelayError::Config("read_batch must be at least 1".into()));
        }
        if self.poll_interval.is_zero() || self.ack_timeout.is_zero() {
            return Err(RelayError::Config(
                "poll_interval and ack_timeout must be positive".into(),
            ));
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return Err(RelayError::Config(
                "backoff_min must be positive and at most backoff_max".into(),
            ));
        }
        Ok(())
    }
}
