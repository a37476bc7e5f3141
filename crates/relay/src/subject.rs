//! The subject scheme and headers of published events (docs/nats.md).
//!
//! `<prefix>.events.<category>.<entity_id>.<EventType>`, where category and entity id come from
//! the stream id `category-entity_id` split at its first `-`. Subjects only route messages; the
//! payload is the authoritative envelope. So a token that NATS could not carry (empty, or holding
//! `.`, `*`, `>` or whitespace) is replaced by a safe spelling instead of refusing the event: one
//! odd stream id must never block every later event, since publication is strictly in order.

use async_nats::HeaderMap;
use eventstore::RecordedEvent;

pub use eventstore::POSITION_HEADER;
/// JetStream's de-duplication header; its value is the event id.
pub const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// `<prefix>.events.>`: every subject the relay publishes to.
pub fn stream_subjects(prefix: &str) -> String {
    format!("{prefix}.events.>")
}

/// The subject an event is published to.
pub fn event_subject(prefix: &str, event: &RecordedEvent) -> String {
    let (category, entity_id) = (event.category(), event.entity_id());
    format!(
        "{prefix}.events.{}.{}.{}",
        token(category),
        token(entity_id),
        token(&event.event_type)
    )
}

/// A single subject token: `_` for an empty one, and `_` in place of each character NATS
/// reserves.
fn token(value: &str) -> String {
    if value.is_empty() {
        return "_".to_owned();
    }
    value
        .chars()
        .map(|character| {
            if matches!(character, '.' | '*' | '>') || character.is_whitespace() {
                '_'
            } else {
                character
            }
        })
        .collect()
}

/// The `Dealstream-Position` of a stored message, if it has a valid one.
pub fn position_of(headers: &HeaderMap) -> Option<i64> {
    headers
        .get(POSITION_HEADER)
        .and_then(|value| value.as_str().parse::<i64>().ok())
        .filter(|position| *position > 0)
}

/// The `Nats-Msg-Id` of a stored message.
pub fn message_id_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(MESSAGE_ID_HEADER).map(|value| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn event(stream_id: &str, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            event_id: "0193a2b4-0000-7000-8000-000000000001"
                .parse()
                .expect("uuid"),
            stream_id: stream_id.to_owned(),
            stream_version: 1,
            position: 7,
            event_type: event_type.to_owned(),
            schema_version: 1,
            recorded_at: Utc::now(),
            occurred_at: Utc::now(),
            data: json!({}),
            metadata: json!({}),
        }
    }

    #[test]
    fn the_stream_id_splits_at_its_first_dash() {
        let id = "0193a2b4-0000-7000-8000-000000000009";
        assert_eq!(
            event_subject(
                "dealstream",
                &event(&format!("opportunity-{id}"), "StageChanged")
            ),
            format!("dealstream.events.opportunity.{id}.StageChanged")
        );
        assert_eq!(
            event_subject(
                "acme",
                &event("pipeline-enterprise-sales", "PipelineDefined")
            ),
            "acme.events.pipeline.enterprise-sales.PipelineDefined"
        );
    }

    #[test]
    fn tokens_nats_cannot_carry_are_replaced() {
        assert_eq!(
            event_subject("p", &event("odd", "X")),
            "p.events.odd._.X",
            "no entity id"
        );
        assert_eq!(
            event_subject("p", &event("a-b.c*d>e f", "T.y")),
            "p.events.a.b_c_d_e_f.T_y"
        );
    }

    #[test]
    fn positions_are_read_back_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(position_of(&headers), None);
        headers.insert(POSITION_HEADER, "42");
        assert_eq!(position_of(&headers), Some(42));
        headers.insert(POSITION_HEADER, "x");
        assert_eq!(position_of(&headers), None);
    }
}
