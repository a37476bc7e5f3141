//! How domain events become the `event_type`, `schema_version` and `data` of a stored envelope,
//! and back.
//!
//! Every event enum is adjacently tagged (`event_type` / `data`), so its serde derive is the whole
//! codec. Reading goes through [`upcast`], the one place that knows older shapes: a changed shape
//! gets a new schema version and old ones are converted when read, never rewritten in the store.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// The schema version every event type is written with today.
pub const CURRENT_SCHEMA_VERSION: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "event type {event_type} has schema version {schema_version}, newer than this build knows"
    )]
    UnknownSchemaVersion {
        event_type: String,
        schema_version: i32,
    },
    #[error("event {event_type} does not match its schema: {source}")]
    Malformed {
        event_type: String,
        source: serde_json::Error,
    },
}

/// Splits an event into its type name and its `data` object.
pub fn encode<E: Serialize>(event: &E) -> (String, Value) {
    // The event enums are adjacently tagged with string names, so serialisation yields an object
    // with exactly these two members; anything else is a bug in a derive, not a runtime condition.
    let Ok(Value::Object(mut tagged)) = serde_json::to_value(event) else {
        unreachable!("domain events serialise to a tagged object")
    };
    let event_type = match tagged.remove("event_type") {
        Some(Value::String(name)) => name,
        _ => unreachable!("domain events carry a string event_type tag"),
    };
    let data = tagged.remove("data").unwrap_or(Value::Object(Map::new()));
    (event_type, data)
}

/// Rebuilds an event from what the store holds, upcasting older schema versions first.
pub fn decode<E: DeserializeOwned>(
    event_type: &str,
    schema_version: i32,
    data: Value,
) -> Result<E, DecodeError> {
    let data = upcast(event_type, schema_version, data)?;
    let mut tagged = Map::with_capacity(2);
    tagged.insert(
        "event_type".to_owned(),
        Value::String(event_type.to_owned()),
    );
    tagged.insert("data".to_owned(), data);
    serde_json::from_value(Value::Object(tagged)).map_err(|source| DecodeError::Malformed {
        event_type: event_type.to_owned(),
        source,
    })
}

/// Converts `data` written with an older schema version to the current shape. Version 1 is the
/// only one so far; the match is where the next version's conversion goes.
pub fn upcast(event_type: &str, schema_version: i32, data: Value) -> Result<Value, DecodeError> {
    match schema_version {
        CURRENT_SCHEMA_VERSION => Ok(data),
        _ => Err(DecodeError::UnknownSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version,
        }),
    }
}
