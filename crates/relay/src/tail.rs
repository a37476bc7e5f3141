//! `dealstream events tail`: follow the stream and print each envelope as one JSON line.
//!
//! It reads with an ordered consumer, which is ephemeral (nothing is left on the server after
//! the tail stops) and recreates itself on gaps, so lines come out in stream order, which is
//! position order. `--from-position N` is turned into a start sequence by a binary search on
//! the `Dealstream-Position` header, since positions grow with sequences.

use async_nats::Client;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures::StreamExt;
use platform::{CancellationToken, StreamName, SubjectPrefix};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::RelayError;
use crate::subject::{position_of, stream_subjects};

/// What to follow and from where.
#[derive(Clone, Debug)]
pub struct TailOptions {
    pub stream_name: StreamName,
    pub subject_prefix: SubjectPrefix,
    /// Start at the first event with this position or a later one; `None` prints only events
    /// published from now on.
    pub from_position: Option<i64>,
    /// A NATS subject filter. One that starts with `<prefix>.` is used as it is; anything else
    /// is taken relative to `<prefix>.events.`, so `opportunity.>` follows one category and
    /// `*.*.StageChanged` one event type.
    pub subject: Option<String>,
    /// Stop after printing this many events; `None` follows until shutdown.
    pub max_events: Option<u64>,
}

impl TailOptions {
    pub fn new(stream_name: StreamName, subject_prefix: SubjectPrefix) -> TailOptions {
        TailOptions {
            stream_name,
            subject_prefix,
            from_position: None,
            subject: None,
            max_events: None,
        }
    }

    /// The full subject filter the consumer uses.
    pub fn filter_subject(&self) -> String {
        let prefix = self.subject_prefix.as_str();
        match self.subject.as_deref().map(str::trim) {
            None | Some("") => stream_subjects(prefix),
            Some(filter) if filter.starts_with(&format!("{prefix}.")) => filter.to_owned(),
            Some(filter) => format!("{prefix}.events.{filter}"),
        }
    }
}

/// Prints every matching envelope as one JSON line to `writer` until shutdown, the end of the
/// writer, or `max_events`. Returns how many lines were written.
pub async fn tail<W>(
    client: Client,
    options: TailOptions,
    writer: &mut W,
    shutdown: CancellationToken,
) -> Result<u64, RelayError>
where
    W: AsyncWrite + Unpin,
{
    let jetstream = async_nats::jetstream::new(client);
    let stream = match jetstream.get_stream(options.stream_name.as_str()).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                GetStreamErrorKind::JetStream(ref inner)
                    if inner.error_code() == ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Err(RelayError::Config(format!(
                "stream {} does not exist yet: the relay creates it when it first starts",
                options.stream_name
            )));
        }
        Err(error) => return Err(RelayError::nats(error)),
    };
    let deliver_policy = match options.from_position {
        None => DeliverPolicy::New,
        Some(position) => DeliverPolicy::ByStartSequence {
            start_sequence: start_sequence(&stream, options.subject_prefix.as_str(), position)
                .await?,
        },
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: options.filter_subject(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(RelayError::nats)?;
    let mut messages = consumer.messages().await.map_err(RelayError::nats)?;
    let mut written = 0;
    if options.max_events == Some(0) {
        return Ok(0);
    }
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(written),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Ok(written);
        };
        let message = message.map_err(RelayError::nats)?;
        let mut line = Vec::with_capacity(message.payload.len() + 1);
        line.extend_from_slice(&message.payload);
        line.push(b'\n');
        // A closed pipe (`| head`) ends the tail quietly; other write errors are reported.
        if let Err(error) = write_line(writer, &line).await {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(written);
            }
            return Err(RelayError::Unexpected(Box::new(error)));
        }
        written += 1;
        if options.max_events.is_some_and(|max| written >= max) {
            return Ok(written);
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8]) -> std::io::Result<()> {
    writer.write_all(line).await?;
    // One flush per event: a tail is for watching, and events arrive at human rates or in
    // bursts that are still cheap to flush.
    writer.flush().await
}

/// The sequence of the first message whose position is at least `position`, or one past the
/// last message when there is none yet (the tail then waits for it).
///
/// Invariant of the search: the first message at or after `low - 1` has a smaller position
/// (or `low` is the first sequence), and the first message at or after `high` has a position
/// at least `position` (or `high` is past the end). Deleted sequences are skipped by asking for
/// the first message at or after a sequence.
pub async fn start_sequence(
    stream: &Stream,
    subject_prefix: &str,
    position: i64,
) -> Result<u64, RelayError> {
    let info = stream.get_info().await.map_err(RelayError::nats)?;
    let all = stream_subjects(subject_prefix);
    let end = info.state.last_sequence + 1;
    let mut low = info.state.first_sequence.max(1);
    let mut high = end;
    while low < high {
        let middle = low + (high - low) / 2;
        let found = match stream.get_first_raw_message_by_subject(&all, middle).await {
            Ok(message) => Some(message),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(error) => return Err(RelayError::nats(error)),
        };
        let at_or_after = match found {
            None => true,
            Some(message) => {
                let found_position = position_of(&message.headers).ok_or_else(|| {
                    RelayError::Corrupt(format!(
                        "message {} has no valid {} header",
                        message.sequence,
                        crate::subject::POSITION_HEADER
                    ))
                })?;
                found_position >= position
            }
        };
        if at_or_after {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}
