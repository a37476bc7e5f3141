//! Decoder fuzzing (issue 9): whatever the store holds, decoding an event never panics. Event
//! types, schema versions and `data` are arbitrary, or valid events with one member removed or
//! replaced by arbitrary JSON. Whatever decodes re-encodes to a shape that decodes to the same
//! event, and a valid event's `data` re-encodes to exactly what it was decoded from.

use std::fmt::Debug;

use domain::codec::{CURRENT_SCHEMA_VERSION, DecodeError, decode, encode, upcast};
use domain::lead::LeadEvent;
use domain::opportunity::OpportunityEvent;
use domain::pipeline::PipelineEvent;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// Valid stored events, one per shape family: the starting points of the mutations.
fn samples() -> Vec<(&'static str, Value)> {
    let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    vec![
        (
            "LeadCaptured",
            json!({"name": "Ada", "company": "Analytical", "email": "ada@example.com",
                   "country": "GB", "source": "web"}),
        ),
        ("LeadRouted", json!({"owner": "anna", "rule": "emea"})),
        (
            "LeadQualified",
            json!({"criteria": {"budget": true, "authority": false, "need": true, "timeline": true}}),
        ),
        ("LeadConverted", json!({"opportunity_id": id})),
        (
            "OpportunityCreated",
            json!({"name": "Fleet", "lead_id": id, "pipeline": "default", "stage": "new",
                   "probability": 10, "forecast_category": "pipeline", "amount": 120000,
                   "currency": "EUR", "expected_close_date": "2026-12-15", "owner": "alice"}),
        ),
        (
            "StageChanged",
            json!({"from": "new", "to": "quoted", "probability": 50,
                   "forecast_category": "best_case", "reason": null}),
        ),
        (
            "ActivityLogged",
            json!({"activity_id": id, "kind": "call", "summary": "hello",
                   "occurred_at": "2026-11-26T10:00:00.123456Z"}),
        ),
        (
            "OpportunityClosed",
            json!({"outcome": "lost", "reason": "budget", "closed_at": "2026-11-26T10:00:00Z"}),
        ),
        (
            "PipelineDefined",
            json!({"name": "Default", "stages": [
                {"name": "new", "probability": 10, "forecast_category": "pipeline"}]}),
        ),
    ]
}

/// Arbitrary JSON, nested a few levels, with member names that are often real field names.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |number| number.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("2026-12-15".to_owned()),
            Just("EUR".to_owned()),
            Just("new".to_owned()),
            ".{0,24}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(member_name(), inner, 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "owner",
            "stage",
            "amount",
            "currency",
            "probability",
            "criteria",
            "stages",
            "outcome",
            "reason",
            "from",
            "to",
            "opportunity_id",
            "follow_up_id",
            "kind",
        ])
        .prop_map(str::to_owned),
        ".{0,12}",
    ]
}

fn event_type() -> impl Strategy<Value = String> {
    let known: Vec<String> = samples()
        .into_iter()
        .map(|(event_type, _)| event_type.to_owned())
        .chain(
            [
                "FollowUpDue",
                "ProbabilityOverridden",
                "OpportunityReopened",
                "PipelineRevised",
            ]
            .map(str::to_owned),
        )
        .collect();
    prop_oneof![prop::sample::select(known), ".{0,24}"]
}

fn schema_version() -> impl Strategy<Value = i32> {
    prop_oneof![Just(CURRENT_SCHEMA_VERSION), any::<i32>()]
}

/// Decodes as `E`; what decodes must re-encode under its own type to data that decodes to the
/// same event, and re-encoding that is a fixed point.
fn check<E>(event_type: &str, schema_version: i32, data: &Value) -> Result<(), TestCaseError>
where
    E: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match decode::<E>(event_type, schema_version, data.clone()) {
        Ok(event) => {
            prop_assert_eq!(schema_version, CURRENT_SCHEMA_VERSION);
            let (encoded_type, encoded_data) = encode(&event);
            prop_assert_eq!(&encoded_type, event_type);
            let again: E = decode(&encoded_type, CURRENT_SCHEMA_VERSION, encoded_data.clone())
                .map_err(|error| TestCaseError::fail(format!("re-decoding: {error}")))?;
            prop_assert_eq!(&again, &event);
            prop_assert_eq!(encode(&again).1, encoded_data);
        }
        Err(DecodeError::UnknownSchemaVersion {
            event_type: named,
            schema_version: version,
        }) => {
            prop_assert_ne!(schema_version, CURRENT_SCHEMA_VERSION);
            prop_assert_eq!(named, event_type);
            prop_assert_eq!(version, schema_version);
        }
        Err(DecodeError::Malformed {
            event_type: named, ..
        }) => {
            prop_assert_eq!(named, event_type);
        }
    }
    Ok(())
}

fn check_every_decoder(
    event_type: &str,
    schema_version: i32,
    data: &Value,
) -> Result<(), TestCaseError> {
    // Upcasting alone keeps the current version's data as it is.
    if let Ok(upcast) = upcast(event_type, schema_version, data.clone()) {
        prop_assert_eq!(&upcast, data);
    }
    check::<LeadEvent>(event_type, schema_version, data)?;
    check::<OpportunityEvent>(event_type, schema_version, data)?;
    check::<PipelineEvent>(event_type, schema_version, data)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_envelopes_never_panic(
        event_type in event_type(),
        schema_version in schema_version(),
        data in any_json(),
    ) {
        check_every_decoder(&event_type, schema_version, &data)?;
    }

    #[test]
    fn mutated_events_never_panic(
        sample in prop::sample::select(samples()),
        member in member_name(),
        replacement in prop::option::of(any_json()),
        schema_version in schema_version(),
    ) {
        let (event_type, mut data) = sample;
        let members = data.as_object_mut().expect("samples are objects");
        let target = members
            .keys()
            .find(|name| **name == member)
            .cloned()
            .unwrap_or(member);
        match replacement {
            Some(value) => members.insert(target, value),
            None => members.remove(&target),
        };
        check_every_decoder(event_type, schema_version, &data)?;
    }
}

/// The unmutated samples decode, and re-encode to exactly the data they were decoded from.
#[test]
fn valid_events_re_encode_to_what_they_were_decoded_from() {
    for (event_type, data) in samples() {
        let (encoded_type, encoded) = if event_type.starts_with("Lead") {
            encode(&decode::<LeadEvent>(event_type, CURRENT_SCHEMA_VERSION, data.clone()).unwrap())
        } else if event_type.starts_with("Pipeline") {
            encode(
                &decode::<PipelineEvent>(event_type, CURRENT_SCHEMA_VERSION, data.clone()).unwrap(),
            )
        } else {
            encode(
                &decode::<OpportunityEvent>(event_type, CURRENT_SCHEMA_VERSION, data.clone())
                    .unwrap(),
            )
        };
        assert_eq!(encoded_type, event_type);
        assert_eq!(encoded, data, "{event_type}");
    }
}
