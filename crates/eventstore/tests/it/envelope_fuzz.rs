//! The envelope decoder reads what other processes wrote (JetStream messages, the feed): no input
//! may make it panic, and every envelope it accepts serializes back to one it reads the same.

use eventstore::RecordedEvent;
use proptest::prelude::*;
use serde_json::{Value, json};

fn valid_envelope() -> Value {
    json!({
        "event_id": "01936d4e-0000-7000-8000-000000000001",
        "stream_id": "opportunity-01936d4e-0000-7000-8000-000000000002",
        "stream_version": 3,
        "position": 1234,
        "event_type": "StageChanged",
        "schema_version": 1,
        "recorded_at": "2026-11-26T10:00:00.123456Z",
        "occurred_at": "2026-11-26T09:00:00.000001Z",
        "data": { "from": "contacted", "to": "quoted" },
        "metadata": { "actor": "api:anna" }
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn check(text: &str) {
    if let Ok(event) = serde_json::from_str::<RecordedEvent>(text) {
        let again: RecordedEvent = serde_json::from_value(
            serde_json::to_value(&event).expect("an accepted envelope serializes"),
        )
        .expect("a serialized envelope reads back");
        assert_eq!(again, event);
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        check(&text);
    }

    #[test]
    fn a_valid_envelope_with_one_field_replaced_never_panics(
        field in prop::sample::select(vec![
            "event_id", "stream_id", "stream_version", "position", "event_type",
            "schema_version", "recorded_at", "occurred_at", "data", "metadata", "unknown",
        ]),
        value in any_json(),
    ) {
        let mut envelope = valid_envelope();
        envelope[field] = value;
        check(&envelope.to_string());
    }

    #[test]
    fn a_valid_envelope_cut_anywhere_never_panics(cut in 0_usize..400) {
        let text = valid_envelope().to_string();
        let cut = cut.min(text.len());
        if text.is_char_boundary(cut) {
            check(&text[..cut]);
        }
    }
}

#[test]
fn the_valid_envelope_is_accepted_with_both_times() {
    let event: RecordedEvent = serde_json::from_value(valid_envelope()).expect("valid");
    assert_ne!(event.occurred_at, event.recorded_at);
    check(&valid_envelope().to_string());
}
