//! The stored shape of events: `event_type`, `data` with the field names of docs/events.md, and the
//! decode path with its schema versions.

use domain::codec::{CURRENT_SCHEMA_VERSION, DecodeError, decode, encode};
use domain::lead::{Criteria, LeadEvent, LeadProfile};
use domain::opportunity::{OpportunityCreated, OpportunityEvent as E};
use domain::pipeline::PipelineEvent;
use domain::values::{ActivityId, ActivityKind, ForecastCategory, LeadId, Outcome, PipelineSlug};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::support::{
    at, cents, currency, date, default_pipeline, follow_up, kind, percent, spec_fields, stage,
    text, uuid,
};

/// Encodes, checks the type and `data`, and decodes back to the same event.
#[track_caller]
fn assert_encodes<T>(event: T, event_type: &str, data: Value)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let (encoded_type, encoded_data) = encode(&event);
    assert_eq!(encoded_type, event_type);
    assert_eq!(encoded_data, data, "data of {event_type}");
    for field in spec_fields(event_type) {
        assert!(
            encoded_data.get(field).is_some(),
            "{event_type} lacks {field}"
        );
    }
    let decoded: T = decode(&encoded_type, CURRENT_SCHEMA_VERSION, encoded_data).unwrap();
    assert_eq!(decoded, event);
}

#[test]
fn stage_changed_data() {
    assert_encodes(
        E::StageChanged {
            from: stage("contacted"),
            to: stage("quoted"),
            probability: percent(50),
            forecast_category: ForecastCategory::BestCase,
            reason: None,
        },
        "StageChanged",
        json!({
            "from": "contacted", "to": "quoted", "probability": 50,
            "forecast_category": "best_case", "reason": null,
        }),
    );
}

#[test]
fn opportunity_created_data() {
    let id = uuid(7);
    assert_encodes(
        E::OpportunityCreated(OpportunityCreated {
            name: text("Fleet renewal"),
            lead_id: Some(LeadId(id)),
            pipeline: PipelineSlug::default_pipeline(),
            stage: stage("new"),
            probability: percent(10),
            forecast_category: ForecastCategory::Pipeline,
            amount: cents(1_000_000),
            currency: currency("EUR"),
            expected_close_date: date(2026, 12, 31),
            owner: text("alice"),
        }),
        "OpportunityCreated",
        json!({
            "name": "Fleet renewal", "lead_id": id.to_string(), "pipeline": "default",
            "stage": "new", "probability": 10, "forecast_category": "pipeline",
            "amount": 1_000_000, "currency": "EUR", "expected_close_date": "2026-12-31",
            "owner": "alice",
        }),
    );
}

#[test]
fn override_and_close_data() {
    assert_encodes(
        E::ProbabilityOverridden {
            probability: None,
            forecast_category: Some(ForecastCategory::Commit),
        },
        "ProbabilityOverridden",
        json!({ "probability": null, "forecast_category": "commit" }),
    );
    assert_encodes(
        E::OpportunityClosed {
            outcome: Outcome::Lost,
            reason: Some(text("price")),
            closed_at: at(2026, 11, 26, 10),
        },
        "OpportunityClosed",
        json!({ "outcome": "lost", "reason": "price", "closed_at": "2026-11-26T10:00:00Z" }),
    );
    assert_encodes(
        E::OpportunityReopened {
            stage: stage("new"),
            probability: percent(10),
            forecast_category: ForecastCategory::Pipeline,
        },
        "OpportunityReopened",
        json!({ "stage": "new", "probability": 10, "forecast_category": "pipeline" }),
    );
}

#[test]
fn activity_and_follow_up_data() {
    let id = uuid(3);
    assert_encodes(
        E::ActivityLogged {
            activity_id: ActivityId(id),
            kind: ActivityKind::QuoteSent,
            summary: text("sent v2"),
            occurred_at: at(2026, 1, 2, 3),
        },
        "ActivityLogged",
        json!({
            "activity_id": id.to_string(), "kind": "quote_sent", "summary": "sent v2",
            "occurred_at": "2026-01-02T03:00:00Z",
        }),
    );
    assert_encodes(
        E::FollowUpDue {
            follow_up_id: follow_up(3),
            kind: kind("stale-deal"),
            due_at: at(2026, 1, 2, 3),
        },
        "FollowUpDue",
        json!({
            "follow_up_id": id.to_string(), "kind": "stale-deal",
            "due_at": "2026-01-02T03:00:00Z",
        }),
    );
    assert_encodes(
        E::FollowUpCancelled {
            follow_up_id: follow_up(3),
            reason: text("done by phone"),
        },
        "FollowUpCancelled",
        json!({ "follow_up_id": id.to_string(), "reason": "done by phone" }),
    );
}

#[test]
fn money_and_owner_changes_data() {
    assert_encodes(
        E::AmountChanged {
            amount: cents(i64::MAX.into()),
            currency: currency("JPY"),
        },
        "AmountChanged",
        json!({ "amount": i64::MAX, "currency": "JPY" }),
    );
    assert_encodes(
        E::CloseDateChanged {
            expected_close_date: date(2027, 1, 31),
            previous: date(2026, 12, 31),
        },
        "CloseDateChanged",
        json!({ "expected_close_date": "2027-01-31", "previous": "2026-12-31" }),
    );
    assert_encodes(
        E::OwnerChanged {
            owner: text("bob"),
            previous: text("alice"),
        },
        "OwnerChanged",
        json!({ "owner": "bob", "previous": "alice" }),
    );
}

#[test]
fn lead_events_data() {
    assert_encodes(
        LeadEvent::LeadCaptured(LeadProfile {
            name: text("Ada"),
            company: None,
            email: None,
            country: None,
            source: None,
        }),
        "LeadCaptured",
        json!({ "name": "Ada", "company": null, "email": null, "country": null, "source": null }),
    );
    assert_encodes(
        LeadEvent::LeadQualified {
            criteria: Criteria {
                budget: true,
                authority: false,
                need: true,
                timeline: true,
            },
        },
        "LeadQualified",
        json!({ "criteria": { "budget": true, "authority": false, "need": true, "timeline": true } }),
    );
    assert_encodes(
        LeadEvent::LeadRouted {
            owner: text("alice"),
            rule: text("country:DE"),
        },
        "LeadRouted",
        json!({ "owner": "alice", "rule": "country:DE" }),
    );
}

#[test]
fn pipeline_events_data() {
    let stages = json!([
        { "name": "new", "probability": 10, "forecast_category": "pipeline" },
        { "name": "contacted", "probability": 20, "forecast_category": "pipeline" },
        { "name": "quoted", "probability": 50, "forecast_category": "best_case" },
        { "name": "negotiation", "probability": 75, "forecast_category": "commit" },
    ]);
    assert_encodes(
        PipelineEvent::PipelineDefined(default_pipeline()),
        "PipelineDefined",
        json!({ "name": "Default", "stages": stages }),
    );
    assert_encodes(
        PipelineEvent::PipelineRevised(default_pipeline()),
        "PipelineRevised",
        json!({ "name": "Default", "stages": stages }),
    );
}

#[test]
fn unknown_schema_versions_are_refused() {
    for version in [0, 2, -1] {
        let result = decode::<E>(
            "OwnerChanged",
            version,
            json!({ "owner": "bob", "previous": "alice" }),
        );
        assert!(
            matches!(
                result,
                Err(DecodeError::UnknownSchemaVersion { ref event_type, schema_version })
                    if event_type == "OwnerChanged" && schema_version == version
            ),
            "{result:?}"
        );
    }
}

#[test]
fn malformed_data_and_unknown_types_are_refused() {
    for (event_type, data) in [
        ("OwnerChanged", json!({ "owner": "bob" })),
        ("OwnerChanged", json!({ "owner": 3, "previous": "alice" })),
        ("OwnerChanged", json!(null)),
        ("LeadCaptured", json!({ "name": "Ada" })),
        ("NoSuchEvent", json!({})),
    ] {
        let result = decode::<E>(event_type, CURRENT_SCHEMA_VERSION, data);
        assert!(
            matches!(result, Err(DecodeError::Malformed { event_type: ref t, .. }) if t == event_type),
            "{event_type}: {result:?}"
        );
    }
}

#[test]
fn stored_values_are_not_validated_again() {
    // An event is a fact: a currency withdrawn later must not make history unreadable.
    let event: E = decode(
        "AmountChanged",
        CURRENT_SCHEMA_VERSION,
        json!({ "amount": 5, "currency": "HRK" }),
    )
    .unwrap();
    let E::AmountChanged { currency, .. } = event else {
        panic!("{event:?}")
    };
    assert_eq!(currency.as_str(), "HRK");
}
