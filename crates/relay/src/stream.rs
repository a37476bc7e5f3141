//! The JetStream side of the relay: setting up the stream and finding where publication stands.
//!
//! The stream itself is the relay's only checkpoint. Its last message carries the position of
//! the last published event, so there is no relay-side state that could drift from what
//! JetStream holds: [`resume_point`] reads it on start and after every failure.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, Context};

use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::subject::{message_id_of, position_of, stream_subjects};

/// Where publication continues: the stream's last sequence and the position of the last event
/// it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResumePoint {
    /// The stream's last sequence, which the next publish must find (expected-last-sequence).
    pub(crate) last_sequence: u64,
    /// Position of the last event in the stream; 0 when it holds none.
    pub(crate) last_position: i64,
    /// Event id of that message, to check it against the store.
    pub(crate) last_event_id: Option<String>,
}

/// Creates the stream, or makes sure an existing one captures our subjects with our
/// de-duplication window. Other settings an operator chose (limits, replicas) are kept.
pub(crate) async fn ensure_stream(
    jetstream: &Context,
    config: &RelayConfig,
) -> Result<Stream, RelayError> {
    let name = config.stream_name.as_str();
    let subjects = stream_subjects(config.subject_prefix.as_str());
    let setup_error = |source: jetstream::context::CreateStreamError| {
        use jetstream::context::CreateStreamErrorKind;
        match source.kind() {
            CreateStreamErrorKind::JetStream(_) | CreateStreamErrorKind::InvalidStreamName => {
                RelayError::StreamSetup {
                    stream: name.to_owned(),
                    source: Box::new(source),
                }
            }
            _ => RelayError::nats(source),
        }
    };
    match jetstream.get_stream(name).await {
        Ok(existing) => {
            let mut wanted = existing.cached_info().config.clone();
            // Another deployment's events in the same stream would interleave with ours and
            // break the resume point of both relays; two deployments sharing a NATS server
            // need a stream each (DEALSTREAM_NATS_STREAM) as well as a prefix each.
            if let Some(foreign) = wanted
                .subjects
                .iter()
                .find(|subject| subject.ends_with(".events.>") && **subject != subjects)
            {
                return Err(RelayError::Config(format!(
                    "stream {name} already carries {foreign}, another deployment's events; \
                     give this deployment its own DEALSTREAM_NATS_STREAM"
                )));
            }
            let mut changed = false;
            if !wanted.subjects.contains(&subjects) {
                wanted.subjects.push(subjects.clone());
                changed = true;
            }
            if wanted.duplicate_window != config.duplicate_window {
                wanted.duplicate_window = config.duplicate_window;
                changed = true;
            }
            if wanted.storage != stream::StorageType::File {
                // The storage type of a stream cannot be changed; a memory stream loses the
                // events on a server restart, which the relay cannot notice.
                tracing::warn!(stream = name, "stream does not use file storage");
            }
            if changed {
                tracing::info!(stream = name, subjects = %subjects, "updating stream");
                jetstream
                    .update_stream(&wanted)
                    .await
                    .map_err(setup_error)?;
                return jetstream.get_stream(name).await.map_err(RelayError::nats);
            }
            Ok(existing)
        }
        Err(error)
            if matches!(
                error.kind(),
                GetStreamErrorKind::JetStream(ref inner)
                    if inner.error_code() == ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            tracing::info!(stream = name, subjects = %subjects, "creating stream");
            jetstream
                .create_stream(stream::Config {
                    name: name.to_owned(),
                    subjects: vec![subjects],
                    storage: stream::StorageType::File,
                    duplicate_window: config.duplicate_window,
                    description: Some(
                        "dealstream events in position order, published by the relay".into(),
                    ),
                    ..Default::default()
                })
                .await
                .map_err(setup_error)
        }
        Err(error) => Err(RelayError::nats(error)),
    }
}

/// Reads the stream's last message. Only the relay publishes to the stream, so that message is
/// the last event published, whatever happened to any earlier relay process.
pub(crate) async fn resume_point(
    stream: &Stream,
    subject_prefix: &str,
) -> Result<ResumePoint, RelayError> {
    let info = stream.get_info().await.map_err(RelayError::nats)?;
    let last_sequence = info.state.last_sequence;
    if info.state.messages == 0 {
        if last_sequence > 0 {
            // Purged, or every message aged out: nothing says what was published, so the relay
            // starts from the first event again. Only an operator's purge or a max_age limit
            // (the relay sets none) can lead here.
            tracing::warn!(
                stream = %info.config.name,
                last_sequence,
                "stream is empty but has held messages; republishing from position 1"
            );
        }
        return Ok(ResumePoint {
            last_sequence,
            last_position: 0,
            last_event_id: None,
        });
    }
    let message = match stream.get_raw_message(last_sequence).await {
        Ok(message) => message,
        // The last message was deleted by hand: continue after the last one that is there.
        // Events after it are published again, at sequences after `last_sequence`.
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => stream
            .get_last_raw_message_by_subject(&stream_subjects(subject_prefix))
            .await
            .map_err(RelayError::nats)?,
        Err(error) => return Err(RelayError::nats(error)),
    };
    let Some(last_position) = position_of(&message.headers) else {
        return Err(RelayError::Corrupt(format!(
            "message {} on {} has no valid {} header: something other than the relay \
             publishes to the stream",
            message.sequence,
            message.subject,
            crate::subject::POSITION_HEADER
        )));
    };
    Ok(ResumePoint {
        last_sequence,
        last_position,
        last_event_id: message_id_of(&message.headers).map(str::to_owned),
    })
}

/// Messages of the stream a durable consumer has not had acknowledged yet (pending plus awaiting
/// their ack): the lag `/readyz` reports for the projector and the workflow.
pub async fn consumer_lag(
    client: &async_nats::Client,
    stream_name: &str,
    durable: &str,
) -> Result<u64, RelayError> {
    let jetstream = jetstream::new(client.clone());
    let stream = jetstream
        .get_stream(stream_name)
        .await
        .map_err(RelayError::nats)?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(durable)
        .await
        .map_err(RelayError::nats)?;
    let info = consumer.info().await.map_err(RelayError::nats)?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}
