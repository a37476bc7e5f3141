//! Business time beside transaction time: `occurred_at` equals `recorded_at` unless history is
//! imported with its original dates, and never decreases within a stream.

use chrono::{DateTime, Duration, Utc};
use eventstore::{AppendError, AppendRequest, ExpectedVersion, RecordedEvent};
use testkit::TestDb;

use crate::{events, new_stream, single};

fn dated(request: AppendRequest, occurred_at: DateTime<Utc>) -> AppendRequest {
    AppendRequest {
        occurred_at: Some(occurred_at),
        ..request
    }
}

#[tokio::test]
async fn a_live_event_occurred_when_it_was_recorded_and_an_imported_one_keeps_its_date() {
    let database = TestDb::new().await;
    let store = database.store();
    let imported = new_stream("opportunity");
    let march = "2025-03-14T09:30:00.250000Z"
        .parse::<DateTime<Utc>>()
        .unwrap();
    store
        .append(dated(
            single(&imported, ExpectedVersion::NoStream, events(2)),
            march,
        ))
        .await
        .expect("import");
    store
        .append(single(&imported, ExpectedVersion::Exact(2), events(1)))
        .await
        .expect("live append after the import");

    let stream = store.read_stream(&imported).await.expect("read");
    assert_eq!(stream[0].occurred_at, march);
    assert_eq!(stream[1].occurred_at, march);
    assert!(stream[0].recorded_at > march);
    assert_eq!(stream[2].occurred_at, stream[2].recorded_at);
    let envelope = serde_json::to_value(&stream[0]).expect("serialize");
    assert_eq!(envelope["occurred_at"], "2025-03-14T09:30:00.250000Z");
}

#[tokio::test]
async fn business_time_never_decreases_within_a_stream() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("opportunity");
    let june = "2025-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    store
        .append(dated(
            single(&stream, ExpectedVersion::NoStream, events(1)),
            june,
        ))
        .await
        .expect("import");

    let earlier = dated(
        single(&stream, ExpectedVersion::Exact(1), events(1)),
        june - Duration::days(1),
    );
    match store.append(earlier).await {
        Err(AppendError::OccurredBeforeStreamHead {
            stream_id,
            last_occurred_at,
            ..
        }) => {
            assert_eq!(stream_id, stream);
            assert_eq!(last_occurred_at, june);
        }
        other => panic!("expected OccurredBeforeStreamHead, got {other:?}"),
    }
    let same_instant = dated(single(&stream, ExpectedVersion::Exact(1), events(1)), june);
    store.append(same_instant).await.expect("equal is allowed");
    assert_eq!(store.read_stream(&stream).await.expect("read").len(), 2);
}

#[tokio::test]
async fn history_cannot_be_imported_from_the_future() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("lead");
    let tomorrow = Utc::now() + Duration::days(1);
    match store
        .append(dated(
            single(&stream, ExpectedVersion::NoStream, events(1)),
            tomorrow,
        ))
        .await
    {
        Err(AppendError::OccurredInTheFuture { .. }) => {}
        other => panic!("expected OccurredInTheFuture, got {other:?}"),
    }
    assert!(store.read_stream(&stream).await.expect("read").is_empty());
}

#[tokio::test]
async fn rows_from_before_business_time_read_it_as_their_recorded_at() {
    let database = TestDb::new().await;
    let stream = new_stream("lead");
    let client = database.connect().await;
    client
        .batch_execute(&format!(
            "insert into events (position, event_id, stream_id, stream_version, event_type, \
                 schema_version, recorded_at, data, metadata) \
             values (1, gen_random_uuid(), '{stream}', 1, 'Tested', 1, \
                 '2024-01-02T03:04:05.000006Z', '{{}}', '{{}}')"
        ))
        .await
        .expect("insert a row as an older version wrote it");
    let store = database.store();
    let event = store.read_stream(&stream).await.expect("read").remove(0);
    assert_eq!(event.occurred_at, event.recorded_at);
    store
        .append(single(&stream, ExpectedVersion::Exact(1), events(1)))
        .await
        .expect("append after an old row");
}

#[test]
fn an_envelope_published_before_business_time_existed_reads_it_as_recorded_at() {
    let envelope = serde_json::json!({
        "event_id": "01936d4e-0000-7000-8000-000000000001",
        "stream_id": "lead-01936d4e-0000-7000-8000-000000000002",
        "stream_version": 1,
        "position": 1,
        "event_type": "LeadCaptured",
        "schema_version": 1,
        "recorded_at": "2026-11-26T10:00:00.123456Z",
        "data": {},
        "metadata": {}
    });
    let event: RecordedEvent = serde_json::from_value(envelope).expect("old envelope");
    assert_eq!(event.occurred_at, event.recorded_at);
}
