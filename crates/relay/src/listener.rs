//! The LISTEN side: one dedicated PostgreSQL connection that turns the store's post-commit
//! NOTIFY into a wake-up for the publish loop.
//!
//! A wake-up is a [`Notify`] permit, so one that arrives while the loop is busy is kept, and any
//! number of notifications collapse into one extra read. After every (re)connection the loop is
//! woken once, because notifications sent while the connection was down are lost; the slow poll
//! in the publish loop covers whatever else slips through. This module never reads events.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use eventstore::EventStore;
use futures::StreamExt;
use platform::CancellationToken;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::backoff::Backoff;
use crate::stats::RelayStats;

/// Shared between the listener task and the publish loop.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    pub(crate) notify: Notify,
    /// The highest position any notification announced, for the lag metric without a query.
    pub(crate) announced_head: AtomicI64,
}

pub(crate) struct Listener {
    pub(crate) database: tokio_postgres::Config,
    pub(crate) store: EventStore,
    pub(crate) wakeup: Arc<Wakeup>,
    pub(crate) stats: RelayStats,
    pub(crate) backoff: Backoff,
}

impl Listener {
    /// Keeps a LISTEN connection open until `shutdown`, reconnecting with backoff.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        // A dead peer without a FIN would otherwise go unnoticed for the system default of
        // two hours, and the relay would fall back to the slow poll all that time.
        self.database.keepalives(true);
        self.database.keepalives_idle(Duration::from_secs(30));
        let channel = loop {
            match self.store.notify_channel().await {
                Ok(channel) => break channel,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot name the notification channel yet");
                    if !self.backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        };
        loop {
            match self.listen_until_lost(&channel, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(error = %error, channel = %channel, "LISTEN connection lost")
                }
            }
            if !self.backoff.wait(&shutdown).await {
                return;
            }
        }
    }

    /// Ok when shutdown was requested, Err when the connection failed or ended.
    async fn listen_until_lost(
        &mut self,
        channel: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), crate::error::BoxError> {
        let (client, mut connection) = self.database.connect(NoTls).await?;
        let (sender, mut messages) = mpsc::unbounded_channel();
        // The connection must be polled for LISTEN itself to complete, so it is driven by its
        // own task that forwards notifications and the error that ends it.
        let driver = tokio::spawn(async move {
            let mut stream =
                futures::stream::poll_fn(move |context| connection.poll_message(context));
            while let Some(message) = stream.next().await {
                let failed = message.is_err();
                if sender.send(message).is_err() || failed {
                    break;
                }
            }
        });
        let _abort_driver = AbortOnDrop(driver);
        client
            .batch_execute(&eventstore::listen_statement(channel))
            .await?;
        self.backoff.reset();
        self.stats.count_listener_connect();
        tracing::debug!(channel = %channel, "listening for appends");
        self.wakeup.notify.notify_one();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = messages.recv() => match message {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        self.stats.count_notification();
                        if let Ok(position) = notification.payload().parse::<i64>() {
                            self.wakeup.announced_head.fetch_max(position, Ordering::Relaxed);
                        }
                        self.wakeup.notify.notify_one();
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err("the server closed the connection".into()),
                },
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
