//! The values that cross the store's boundary: what callers append and what readers get back.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What the caller believes a stream's version is when it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// No check: the events go after whatever the stream holds.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream's current version must be exactly this (1 for a stream with one event).
    /// `Exact(0)` is accepted and means the same as `NoStream`.
    Exact(i64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` (0 = no events) satisfies this expectation.
    pub fn matches(self, actual: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(version) => actual == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => formatter.write_str("any version"),
            ExpectedVersion::NoStream => formatter.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(formatter, "version {version}"),
        }
    }
}

/// An event to append. The store treats `data` and `metadata` as opaque JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique across the whole store; appending an id that already exists fails the request.
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Value,
}

/// The events for one stream within a request, with the expectation they are checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    /// May be empty: the expectation is still checked, which lets a command assert a stream's
    /// version without writing to it.
    pub events: Vec<NewEvent>,
}

/// One command's append: every stream's events are written in one transaction, or none are.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// A repeated command id is answered with the first outcome and appends nothing.
    pub command_id: Uuid,
    /// Identifies the command's content, so that reusing a command id for a different command
    /// is refused instead of silently replayed. `None` only equals `None`.
    pub fingerprint: Option<Vec<u8>>,
    pub streams: Vec<StreamAppend>,
    /// When the command happened in the world, for history imported with its original dates;
    /// `None` (every live command) means when it is recorded. Never after the moment it is
    /// recorded, and never before the last event of any stream it appends to, so that business
    /// time never decreases within a stream.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// The answer to an append; stored with the command id so a repeat gets the same answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AppendOutcome {
    /// For every stream of the request, in request order, its version after the append (its
    /// current version if the request had no events for it).
    pub streams: Vec<StreamVersion>,
    /// Position of the last event this request appended; if it appended nothing, the store's
    /// head position at that moment. Read models use it for read-your-writes.
    pub position: i64,
    /// True when the command id had already been handled and this is the stored first answer.
    pub replayed: bool,
}

/// A command id the store has already handled, with its first answer (`replayed` set).
#[derive(Clone, Debug, PartialEq)]
pub struct HandledCommand {
    pub fingerprint: Option<Vec<u8>>,
    pub outcome: AppendOutcome,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StreamVersion {
    pub stream_id: String,
    pub version: i64,
}

/// A stored event, as read back. Its serde form is the event envelope, so the field names are a
/// public contract.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(from = "EnvelopeOnTheWire")]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    /// 1 for the stream's first event, without gaps.
    pub stream_version: i64,
    /// Global position: grows in the order events become visible, without gaps.
    pub position: i64,
    pub event_type: String,
    pub schema_version: i32,
    /// Read from the clock under the append lock, so it never decreases as position grows.
    #[serde(with = "rfc3339_micros")]
    pub recorded_at: DateTime<Utc>,
    /// When it happened in the world: `recorded_at`, except for imported history. Never
    /// decreases within a stream, and is never after `recorded_at`.
    #[serde(with = "rfc3339_micros")]
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
    pub metadata: Value,
}

/// The envelope as it may arrive: messages published before `occurred_at` existed lack it, and
/// their business time was their `recorded_at`.
#[derive(Deserialize)]
struct EnvelopeOnTheWire {
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    position: i64,
    event_type: String,
    schema_version: i32,
    #[serde(with = "rfc3339_micros")]
    recorded_at: DateTime<Utc>,
    #[serde(default, with = "optional_rfc3339_micros")]
    occurred_at: Option<DateTime<Utc>>,
    data: Value,
    metadata: Value,
}

impl From<EnvelopeOnTheWire> for RecordedEvent {
    fn from(wire: EnvelopeOnTheWire) -> RecordedEvent {
        RecordedEvent {
            event_id: wire.event_id,
            stream_id: wire.stream_id,
            stream_version: wire.stream_version,
            position: wire.position,
            event_type: wire.event_type,
            schema_version: wire.schema_version,
            recorded_at: wire.recorded_at,
            occurred_at: wire.occurred_at.unwrap_or(wire.recorded_at),
            data: wire.data,
            metadata: wire.metadata,
        }
    }
}

/// The NATS header that carries a published event's global position, as decimal text: how a
/// consumer that reads only headers (the relay resuming, a projector filling a gap) knows where a
/// message stands in the log.
pub const POSITION_HEADER: &str = "Dealstream-Position";

impl RecordedEvent {
    /// The part of the stream id before the first `-` (`opportunity` for `opportunity-0193...`).
    pub fn category(&self) -> &str {
        category_of(&self.stream_id)
    }

    /// The part of the stream id after the first `-` (`0193...` for `opportunity-0193...`, a
    /// pipeline's slug for `pipeline-default`); empty when there is none.
    pub fn entity_id(&self) -> &str {
        entity_of(&self.stream_id)
    }
}

/// The category of a stream id, computed exactly as the database's generated column does.
pub fn category_of(stream_id: &str) -> &str {
    stream_id.split('-').next().unwrap_or(stream_id)
}

/// The entity's id within a stream id: what follows the category and its `-`.
pub fn entity_of(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or("", |(_, entity)| entity)
}

/// RFC 3339 in UTC with exactly six fractional digits, as the envelope promises; chrono's default
/// varies the number of digits with the value.
mod rfc3339_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|value| value.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod optional_rfc3339_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Instant(#[serde(with = "super::rfc3339_micros")] DateTime<Utc>);
        Ok(Option::<Instant>::deserialize(deserializer)?.map(|instant| instant.0))
    }
}
