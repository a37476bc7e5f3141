//! The publish loop: follow the store by position and publish to JetStream, in order, with many
//! acks in flight.
//!
//! How order and exactly-once survive failures:
//! - Every session starts by reading the stream's last message ([`resume_point`]); the relay
//!   keeps no checkpoint of its own.
//! - Each publish carries `Nats-Expected-Last-Sequence`: the sequence the previous event of the
//!   pipeline is expected to have. If one publish of the pipeline is lost while later ones reach
//!   the server, the server refuses all the later ones, so the stream never gets a gap. The
//!   server checks `Nats-Msg-Id` de-duplication before the expectation (verified on
//!   nats-server 2.9.10), so republishing an event that already landed is answered as a
//!   duplicate at its original sequence instead of breaking the chain.
//! - `Nats-Expected-Last-Msg-Id` was rejected: nats-server 2.9 forgets the last message id on
//!   restart when the last message is older than the de-duplication window, and then refuses
//!   every publish with "wrong last msg ID" until someone intervenes.
//! - On any error the pipeline is dropped (its acks are abandoned), and after a pause the
//!   session starts over from the stream's last message. Stale publishes of the dropped
//!   pipeline that still reach the server either land in order or are refused.
//!
//! Store positions become visible strictly in order (the append holds one lock until it commits), so reading
//! `position > last read` never skips an event that commits late.

use platform::error_chain;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::Client;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use eventstore::{EventStore, RecordedEvent};
use platform::CancellationToken;

use crate::backoff::{Backoff, sleep};
use crate::config::{FailPoint, RelayConfig};
use crate::error::{RelayError, publish_error};
use crate::listener::Wakeup;
use crate::metrics::RelayMetrics;
use crate::stream::{ResumePoint, ensure_stream, resume_point};
use crate::subject::{POSITION_HEADER, event_subject};

pub(crate) struct Publisher {
    pub(crate) config: RelayConfig,
    pub(crate) client: Client,
    pub(crate) jetstream: Context,
    pub(crate) store: EventStore,
    pub(crate) wakeup: Arc<Wakeup>,
    pub(crate) metrics: RelayMetrics,
    pub(crate) shutdown: CancellationToken,
}

/// A publish awaiting its ack.
struct InFlight {
    position: i64,
    /// The stream sequence this event must be stored at.
    sequence: u64,
    recorded_at: DateTime<Utc>,
    ack: PublishAckFuture,
}

/// One session's publishes. Dropped whole on any error.
struct Pipeline {
    /// The sequence the next publish must get; its expected last sequence is one less.
    next_sequence: u64,
    /// The last position handed to a publish: the next store read starts after it.
    read_position: i64,
    /// The last position whose ack confirmed it is in the stream.
    last_published: i64,
    /// In publish order, which is position order and sequence order.
    in_flight: VecDeque<InFlight>,
}

impl Publisher {
    /// Runs sessions until shutdown or an error no retry can fix.
    pub(crate) async fn run(self) -> Result<(), RelayError> {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            match self.session(&mut backoff).await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_retryable() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error = %error_chain(&error),
                        retry_in_ms = delay.as_millis() as u64,
                        "relay interrupted; resuming from the stream's last message after a pause"
                    );
                    self.metrics.retry(&error);
                    if error.is_stale_statement() {
                        // Every pooled connection may hold the invalidated statement; dropping
                        // them all makes the next use prepare it again against the new schema.
                        self.store.pool().manager().statement_caches.clear();
                    }
                    self.report_stalled_lag().await;
                    if !sleep(delay, &self.shutdown).await {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One pass from a fresh resume point until shutdown (Ok) or the first error.
    async fn session(&self, backoff: &mut Backoff) -> Result<(), RelayError> {
        let stream = ensure_stream(&self.jetstream, &self.config).await?;
        let resume = resume_point(&stream, self.config.subject_prefix.as_str()).await?;
        self.config.stats.count_resume();
        self.check_against_store(&resume).await?;
        tracing::info!(
            stream = %self.config.stream_name,
            last_sequence = resume.last_sequence,
            last_position = resume.last_position,
            "resuming publication"
        );
        self.config
            .stats
            .set_last_published_position(resume.last_position);
        self.metrics.last_published(resume.last_position);
        let mut pipeline = Pipeline {
            next_sequence: resume.last_sequence + 1,
            read_position: resume.last_position,
            last_published: resume.last_position,
            in_flight: VecDeque::with_capacity(self.config.max_in_flight),
        };

        loop {
            if self.shutdown.is_cancelled() {
                self.finish(pipeline).await;
                return Ok(());
            }
            self.config.stats.count_store_read();
            let events = self
                .store
                .read_all(pipeline.read_position, self.config.read_batch, None)
                .await?;
            if events.is_empty() {
                while !pipeline.in_flight.is_empty() {
                    self.settle_front(&mut pipeline, backoff).await?;
                }
                // Caught up with what the store showed; a notification may already announce
                // more, which the next read picks up.
                let announced = self.wakeup.announced_head.load(Ordering::Relaxed);
                self.metrics.lag(
                    announced.max(pipeline.last_published),
                    pipeline.last_published,
                    None,
                );
                if !self.wait_for_appends().await {
                    return Ok(());
                }
                continue;
            }
            for event in &events {
                if pipeline.in_flight.len() >= self.config.max_in_flight {
                    self.settle_front(&mut pipeline, backoff).await?;
                }
                if self.config.fail_point == Some(FailPoint::BeforePublish(event.position)) {
                    return Err(RelayError::FaultInjected(FailPoint::BeforePublish(
                        event.position,
                    )));
                }
                self.publish(&mut pipeline, event).await?;
                if self.config.fail_point == Some(FailPoint::AfterPublishBeforeAck(event.position))
                {
                    // Make sure the message reached the server, so the test covers "stored but
                    // never acknowledged" rather than "never sent".
                    self.client.flush().await.map_err(RelayError::nats)?;
                    return Err(RelayError::FaultInjected(FailPoint::AfterPublishBeforeAck(
                        event.position,
                    )));
                }
            }
        }
    }

    /// The stream's last message must be an event of this store, or the stream belongs to
    /// another database (or the store was restored from an older backup) and following
    /// `position > last` would silently skip or mix events.
    async fn check_against_store(&self, resume: &ResumePoint) -> Result<(), RelayError> {
        if resume.last_position == 0 {
            return Ok(());
        }
        self.config.stats.count_store_read();
        let found = self
            .store
            .read_all(resume.last_position - 1, 1, None)
            .await?;
        match found.first() {
            Some(event) if event.position == resume.last_position => {
                let event_id = event.event_id.to_string();
                if resume.last_event_id.as_deref() == Some(event_id.as_str()) {
                    Ok(())
                } else {
                    Err(RelayError::Corrupt(format!(
                        "the stream's last message (position {}) has event id {:?}, the store \
                         has {event_id} at that position",
                        resume.last_position, resume.last_event_id
                    )))
                }
            }
            _ => Err(RelayError::Corrupt(format!(
                "the stream's last message has position {}, which the store does not hold: \
                 the stream belongs to another database or the store lost events",
                resume.last_position
            ))),
        }
    }

    async fn publish(
        &self,
        pipeline: &mut Pipeline,
        event: &RecordedEvent,
    ) -> Result<(), RelayError> {
        let payload =
            serde_json::to_vec(event).map_err(|error| RelayError::Unexpected(Box::new(error)))?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(event.event_id.to_string())
            .header(POSITION_HEADER, event.position.to_string())
            .expected_last_sequence(pipeline.next_sequence - 1);
        let subject = event_subject(self.config.subject_prefix.as_str(), event);
        let ack = self
            .jetstream
            .send_publish(subject, message)
            .await
            .map_err(|error| publish_error(event.position, error))?;
        self.config.stats.count_publish();
        pipeline.in_flight.push_back(InFlight {
            position: event.position,
            sequence: pipeline.next_sequence,
            recorded_at: event.recorded_at,
            ack,
        });
        pipeline.next_sequence += 1;
        pipeline.read_position = event.position;
        Ok(())
    }

    /// Awaits the oldest ack and checks the event landed where the chain says it must.
    async fn settle_front(
        &self,
        pipeline: &mut Pipeline,
        backoff: &mut Backoff,
    ) -> Result<(), RelayError> {
        let Some(front) = pipeline.in_flight.pop_front() else {
            return Ok(());
        };
        let ack = front
            .ack
            .await
            .map_err(|error| publish_error(front.position, error))?;
        if ack.sequence != front.sequence {
            return Err(RelayError::OutOfStep(format!(
                "position {} was acknowledged at sequence {} (duplicate: {}), expected {}",
                front.position, ack.sequence, ack.duplicate, front.sequence
            )));
        }
        if ack.duplicate {
            tracing::debug!(
                position = front.position,
                sequence = ack.sequence,
                "event was already in the stream"
            );
        }
        pipeline.last_published = front.position;
        backoff.reset();
        self.config.stats.count_confirmed(ack.duplicate);
        self.config
            .stats
            .set_last_published_position(front.position);
        self.metrics.published(front.position);
        let announced = self.wakeup.announced_head.load(Ordering::Relaxed);
        self.metrics.lag(
            announced.max(pipeline.read_position),
            front.position,
            pipeline.in_flight.front().map(|next| next.recorded_at),
        );
        if self.config.fail_point == Some(FailPoint::AfterAck(front.position)) {
            return Err(RelayError::FaultInjected(FailPoint::AfterAck(
                front.position,
            )));
        }
        Ok(())
    }

    /// Waits for a NOTIFY, the fallback poll or shutdown; false on shutdown.
    async fn wait_for_appends(&self) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = self.wakeup.notify.notified() => true,
            () = tokio::time::sleep(self.config.poll_interval) => {
                self.config.stats.count_poll();
                true
            }
        }
    }

    /// On shutdown: wait a bounded time for the acks in flight, so a clean stop leaves nothing
    /// to redo. Whatever is still unacknowledged is simply published again after the restart
    /// and recognised as a duplicate.
    async fn finish(&self, mut pipeline: Pipeline) {
        let pending = pipeline.in_flight.len();
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        let drain = async {
            while !pipeline.in_flight.is_empty() {
                self.settle_front(&mut pipeline, &mut backoff).await?;
            }
            Ok::<(), RelayError>(())
        };
        match tokio::time::timeout(self.config.ack_timeout, drain).await {
            Ok(Ok(())) => tracing::info!(pending, "relay stopped with every publish acknowledged"),
            Ok(Err(error)) => tracing::info!(
                error = %error_chain(&error),
                "relay stopped; unacknowledged publishes are redone on restart"
            ),
            Err(_) => tracing::info!(
                "relay stopped before every ack arrived; unacknowledged publishes are redone on restart"
            ),
        }
    }

    /// While NATS is away the loop reads nothing, so the lag gauges are refreshed here, at most
    /// once per backoff step. Best effort: the store may be away too.
    async fn report_stalled_lag(&self) {
        let last_published = self.config.stats.last_published_position();
        self.config.stats.count_store_read();
        let Ok(head) = self.store.head_position().await else {
            return;
        };
        self.config.stats.count_store_read();
        let oldest = match self.store.read_all(last_published, 1, None).await {
            Ok(events) => events.first().map(|event| event.recorded_at),
            Err(_) => return,
        };
        self.metrics.lag(head, last_published, oldest);
    }
}
