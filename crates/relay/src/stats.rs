//! Counters the relay keeps for tests and operators, next to the Prometheus metrics.
//!
//! The metrics facade is process-global and write-only; these counters belong to one relay
//! instance and can be read back, which is what the idle test needs to prove that the relay does
//! not query the store while nothing happens.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Cheap to clone; all clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    store_reads: AtomicU64,
    publishes: AtomicU64,
    confirmed: AtomicU64,
    duplicates: AtomicU64,
    resumes: AtomicU64,
    notifications: AtomicU64,
    polls: AtomicU64,
    listener_connects: AtomicU64,
    last_published_position: AtomicI64,
    active: AtomicBool,
}

impl RelayStats {
    /// Queries the relay made to the event store (reads of the log, head and resume checks).
    pub fn store_reads(&self) -> u64 {
        self.inner.store_reads.load(Ordering::Relaxed)
    }

    /// Messages sent to JetStream, including ones later refused or abandoned.
    pub fn publishes(&self) -> u64 {
        self.inner.publishes.load(Ordering::Relaxed)
    }

    /// Events whose ack confirmed they are in the stream, duplicates included.
    pub fn confirmed(&self) -> u64 {
        self.inner.confirmed.load(Ordering::Relaxed)
    }

    /// Acks that reported a duplicate: the event was already in the stream from an earlier
    /// attempt whose ack was lost.
    pub fn duplicates(&self) -> u64 {
        self.inner.duplicates.load(Ordering::Relaxed)
    }

    /// Times the relay read the stream's last message to find where to continue.
    pub fn resumes(&self) -> u64 {
        self.inner.resumes.load(Ordering::Relaxed)
    }

    /// NOTIFY messages received on the LISTEN connection.
    pub fn notifications(&self) -> u64 {
        self.inner.notifications.load(Ordering::Relaxed)
    }

    /// Fallback polls: waits that ended by the poll interval rather than a notification.
    pub fn polls(&self) -> u64 {
        self.inner.polls.load(Ordering::Relaxed)
    }

    /// Successful (re)connections of the LISTEN connection.
    pub fn listener_connects(&self) -> u64 {
        self.inner.listener_connects.load(Ordering::Relaxed)
    }

    /// The position of the last event known to be in the stream; 0 before the first resume.
    pub fn last_published_position(&self) -> i64 {
        self.inner.last_published_position.load(Ordering::Relaxed)
    }

    /// True while this relay holds the lock and publishes; false while it stands by.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    pub(crate) fn set_active(&self, active: bool) {
        self.inner.active.store(active, Ordering::Relaxed);
    }

    pub(crate) fn count_store_read(&self) {
        self.inner.store_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_publish(&self) {
        self.inner.publishes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_confirmed(&self, duplicate: bool) {
        self.inner.confirmed.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.inner.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_resume(&self) {
        self.inner.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_notification(&self) {
        self.inner.notifications.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_poll(&self) {
        self.inner.polls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_listener_connect(&self) {
        self.inner.listener_connects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_last_published_position(&self, position: i64) {
        self.inner
            .last_published_position
            .store(position, Ordering::Relaxed);
    }
}
