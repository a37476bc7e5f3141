//! A clock that only moves when told to, for tests and demos that need days to pass in seconds.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use commands::Clock;
use tokio::sync::watch;

/// A [`Clock`] moved by hand. Moving it wakes every [`Clock::sleep_until`] whose deadline it
/// reaches, which is how a test makes the workflow's timer loop fire "three days later".
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
    /// Serializes `advance` so that two concurrent moves add up.
    moving: Mutex<()>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: watch::Sender::new(start),
            moving: Mutex::new(()),
        }
    }

    /// Moves the clock forward (or back, with a negative step) and wakes sleepers.
    pub fn advance(&self, step: TimeDelta) {
        let _moving = self
            .moving
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = *self.now.borrow() + step;
        self.now.send_replace(next);
    }

    pub fn set(&self, instant: DateTime<Utc>) {
        self.now.send_replace(instant);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let mut receiver = self.now.subscribe();
        Box::pin(async move {
            loop {
                if *receiver.borrow_and_update() >= deadline {
                    return;
                }
                if receiver.changed().await.is_err() {
                    // The clock is gone: nobody will ever move it, so never wake.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}
