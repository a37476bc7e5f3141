//! The relay's Prometheus metrics, through the `metrics` facade: the binary installs the
//! recorder, and without one these calls cost next to nothing.

use crate::error::RelayError;
use chrono::{DateTime, Utc};
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};

/// Events confirmed in the stream by this process (an ack, duplicate acks included).
pub const EVENTS_PUBLISHED_TOTAL: &str = "dealstream_relay_events_published_total";
/// Store head position minus the last published position.
pub const LAG_POSITIONS: &str = "dealstream_relay_lag_positions";
/// Age of the oldest event not yet published, 0 when caught up.
pub const LAG_SECONDS: &str = "dealstream_relay_lag_seconds";
/// Position of the last event confirmed in the stream.
pub const LAST_PUBLISHED_POSITION: &str = "dealstream_relay_last_published_position";
/// 1 while this relay holds the lock and publishes, 0 while it stands by.
pub const ACTIVE: &str = "dealstream_relay_active";
/// Times this relay took the lock and became the active publisher.
pub const TAKEOVERS_TOTAL: &str = "dealstream_relay_takeovers_total";
/// Publish sessions interrupted by a passing failure and retried after a pause, labelled with
/// `cause`: `nats`, `event_store` or `out_of_step`.
pub const RETRIES_TOTAL: &str = "dealstream_relay_retries_total";

/// Handles registered once per run, so the hot path does no name lookups.
pub(crate) struct RelayMetrics {
    published: Counter,
    lag_positions: Gauge,
    lag_seconds: Gauge,
    last_published: Gauge,
    active: Gauge,
    takeovers: Counter,
}

impl RelayMetrics {
    pub(crate) fn register() -> RelayMetrics {
        describe_counter!(
            EVENTS_PUBLISHED_TOTAL,
            "Events confirmed in the JetStream stream by the relay"
        );
        describe_gauge!(
            LAG_POSITIONS,
            "Store head position minus the last position published"
        );
        describe_gauge!(
            LAG_SECONDS,
            "Age in seconds of the oldest event not yet published, 0 when caught up"
        );
        describe_gauge!(
            LAST_PUBLISHED_POSITION,
            "Position of the last event confirmed in the stream"
        );
        describe_counter!(
            RETRIES_TOTAL,
            "Publish sessions interrupted by a passing NATS or PostgreSQL failure and retried"
        );
        describe_gauge!(
            ACTIVE,
            "1 while this relay holds the lock and is the active publisher, 0 while it stands by"
        );
        describe_counter!(
            TAKEOVERS_TOTAL,
            "Times this relay took the lock and became the active publisher"
        );
        RelayMetrics {
            active: gauge!(ACTIVE),
            takeovers: counter!(TAKEOVERS_TOTAL),
            published: counter!(EVENTS_PUBLISHED_TOTAL),
            lag_positions: gauge!(LAG_POSITIONS),
            lag_seconds: gauge!(LAG_SECONDS),
            last_published: gauge!(LAST_PUBLISHED_POSITION),
        }
    }

    pub(crate) fn active(&self, active: bool) {
        self.active.set(if active { 1.0 } else { 0.0 });
    }

    pub(crate) fn became_active(&self) {
        self.takeovers.increment(1);
        self.active(true);
    }

    pub(crate) fn published(&self, position: i64) {
        self.published.increment(1);
        self.last_published.set(position as f64);
    }

    /// Counts a retried failure; only called for [`RelayError::is_retryable`] errors.
    pub(crate) fn retry(&self, error: &RelayError) {
        let cause = match error {
            RelayError::Unavailable { what: "NATS", .. } => "nats",
            RelayError::Unavailable { .. } => "event_store",
            _ => "out_of_step",
        };
        counter!(RETRIES_TOTAL, "cause" => cause).increment(1);
    }

    pub(crate) fn last_published(&self, position: i64) {
        self.last_published.set(position as f64);
    }

    /// `oldest_unpublished` is the recording time of the first event not yet confirmed, or
    /// `None` when every known event is published.
    pub(crate) fn lag(
        &self,
        head: i64,
        last_published: i64,
        oldest_unpublished: Option<DateTime<Utc>>,
    ) {
        self.lag_positions
            .set(head.saturating_sub(last_published).max(0) as f64);
        let seconds = oldest_unpublished.map_or(0.0, |recorded_at| {
            ((Utc::now() - recorded_at)
                .num_microseconds()
                .unwrap_or(i64::MAX) as f64
                / 1e6)
                .max(0.0)
        });
        self.lag_seconds.set(seconds);
    }
}
