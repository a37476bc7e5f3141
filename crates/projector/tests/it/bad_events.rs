//! Stored events the projector cannot take as they are. A value PostgreSQL refuses is skipped as
//! malformed, so that one bad event never stops a projection; an event of a schema version this
//! build does not know holds the projection right before it until the projector is upgraded.

use std::time::Duration;

use chrono::Datelike;
use eventstore::RecordedEvent;
use projector::rules::{self, Decoded, MalformedEvent};
use projector::{Projection, ProjectorError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Harness, history};

fn with_close_date(event: &RecordedEvent, date: &str) -> RecordedEvent {
    let mut event = event.clone();
    event.data["expected_close_date"] = json!(date);
    event
}

fn opportunity_id(event: &RecordedEvent) -> Uuid {
    Uuid::parse_str(event.stream_id.split_once('-').unwrap().1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_postgres_refuses_is_skipped_as_malformed() {
    let harness = Harness::new().await;
    history::run(&harness.handler, 3, 15, 1, 31).await;
    let events = harness.all_events().await;
    let created = events
        .iter()
        .find(|event| event.event_type == "OpportunityCreated")
        .unwrap();

    // The years PostgreSQL stores pass; the others are malformed, whatever chrono accepts.
    for (date, storable) in [
        ("0001-01-01", true),
        ("9999-12-31", true),
        ("0000-01-01", false),
        ("-0001-12-31", false),
        ("+10000-01-01", false),
    ] {
        let decoded = rules::decode(&with_close_date(created, date));
        assert_eq!(
            matches!(decoded, Decoded::Opportunity(..)),
            storable,
            "{date}: {decoded:?}"
        );
    }

    // A deal created in year 0, and a deal whose close date and an activity were put there.
    let bad_deal = Uuid::now_v7();
    let mut bad_created = created.data.clone();
    bad_created["expected_close_date"] = json!("0000-01-01");
    harness
        .append_raw(
            &format!("opportunity-{bad_deal}"),
            "OpportunityCreated",
            1,
            bad_created,
        )
        .await;
    harness
        .append_raw(
            &created.stream_id,
            "CloseDateChanged",
            1,
            json!({
                "expected_close_date": "0000-01-01",
                "previous": created.data["expected_close_date"],
            }),
        )
        .await;
    harness
        .append_raw(
            &created.stream_id,
            "ActivityLogged",
            1,
            json!({
                "activity_id": Uuid::now_v7(),
                "kind": "call",
                "summary": "touch",
                "occurred_at": "0000-01-01T00:00:00Z",
            }),
        )
        .await;
    // Events after them are applied as usual.
    history::run(&harness.handler, 2, 10, 1, 32).await;

    let stored = harness.all_events().await;
    let malformed = stored
        .iter()
        .filter(|event| {
            matches!(
                rules::decode(event),
                Decoded::Malformed(MalformedEvent::DateOutOfRange { .. })
            )
        })
        .count();
    assert_eq!(malformed, 3);

    let publisher = harness.publisher();
    let running = harness.projector(None);
    harness.caught_up(harness.head().await).await;
    assert!(!running.task.is_finished(), "the projector stopped");
    running.stop().await.unwrap();
    publisher.stop().await;

    let pool = &harness.db.pool;
    assert_eq!(projector::read::deal(pool, bad_deal).await.unwrap(), None);
    let deal = projector::read::deal(pool, opportunity_id(created))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(deal.expected_close_date.year(), 0);
    assert!(
        deal.last_activity_at
            .is_none_or(|occurred_at| occurred_at.year() != 0)
    );
    harness.assert_matches_fold().await;
    let live = harness.snapshot().await;
    harness.rebuild_all().await;
    assert_eq!(harness.snapshot().await, live, "a rebuild skips them alike");
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_schema_version_holds_the_projection_before_it() {
    let harness = Harness::new().await;
    history::run(&harness.handler, 3, 15, 1, 41).await;
    let events = harness.all_events().await;
    let created = events
        .iter()
        .find(|event| event.event_type == "OpportunityCreated")
        .unwrap();
    let newer: Value = created.data.clone();
    let position = harness
        .append_raw(
            &format!("opportunity-{}", Uuid::now_v7()),
            "OpportunityCreated",
            2,
            newer,
        )
        .await;
    history::run(&harness.handler, 2, 10, 1, 42).await;

    // Everything before it is applied, nothing from it on.
    let all = harness.all_events().await;
    let error = projector::apply_batch(&harness.store, Projection::Pipeline, &all)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ProjectorError::UnknownSchemaVersion { position: at, schema_version: 2, .. }
                if *at == position
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    let pool = &harness.db.pool;
    let checkpoint = |projection| projector::read::checkpoint(pool, projection);
    assert_eq!(
        checkpoint(Projection::Pipeline).await.unwrap(),
        position - 1
    );

    // The runner neither skips it nor stops: it retries until an upgraded build takes over.
    let publisher = harness.publisher();
    let running = harness.projector(None);
    for projection in Projection::ALL {
        let reached =
            projector::read::wait_for(pool, projection, position - 1, Duration::from_secs(60))
                .await
                .unwrap();
        assert!(reached, "{projection} did not reach {}", position - 1);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for projection in Projection::ALL {
        assert_eq!(checkpoint(projection).await.unwrap(), position - 1);
    }
    assert!(!running.task.is_finished(), "the projector stopped");
    running.stop().await.unwrap();
    publisher.stop().await;

    // A rebuild fails rather than swap in tables that lack the event.
    let rebuilt = projector::rebuild(
        Projection::Forecast,
        &harness.store,
        &Default::default(),
        &platform::CancellationToken::new(),
        &mut |_| {},
    )
    .await;
    assert!(
        matches!(rebuilt, Err(ProjectorError::UnknownSchemaVersion { .. })),
        "{rebuilt:?}"
    );
    harness.finish().await;
}
