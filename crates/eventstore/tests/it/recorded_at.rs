use eventstore::{EventStore, ExpectedVersion};
use testkit::TestDb;

use crate::{events, new_stream, single};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recorded_at_never_decreases_as_position_grows() {
    let database = TestDb::new().await;
    let stores: Vec<EventStore> = (0..3).map(|_| database.store()).collect();
    let writers: Vec<_> = (0..9)
        .map(|writer| {
            let store = stores[writer % stores.len()].clone();
            tokio::spawn(async move {
                let stream = new_stream("opportunity");
                for append in 0..15 {
                    store
                        .append(single(
                            &stream,
                            ExpectedVersion::Any,
                            events(1 + append % 2),
                        ))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }

    let log = stores[0].read_all(0, 10_000, None).await.expect("read_all");
    assert!(!log.is_empty());
    for pair in log.windows(2) {
        assert_eq!(pair[1].position, pair[0].position + 1);
        assert!(
            pair[1].recorded_at >= pair[0].recorded_at,
            "position {} recorded at {} before position {} at {}",
            pair[1].position,
            pair[1].recorded_at,
            pair[0].position,
            pair[0].recorded_at
        );
    }
}

#[tokio::test]
async fn the_envelope_has_the_spec_field_names_and_microsecond_timestamps() {
    let database = TestDb::new().await;
    let store = database.store();
    store
        .append(single(
            &new_stream("lead"),
            ExpectedVersion::NoStream,
            events(1),
        ))
        .await
        .expect("append");
    let recorded = store.read_all(0, 1, None).await.expect("read").remove(0);
    let envelope = serde_json::to_value(&recorded).expect("serialize");
    let mut fields: Vec<&str> = envelope
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        vec![
            "data",
            "event_id",
            "event_type",
            "metadata",
            "occurred_at",
            "position",
            "recorded_at",
            "schema_version",
            "stream_id",
            "stream_version"
        ]
    );
    assert_eq!(envelope["occurred_at"], envelope["recorded_at"]);
    let recorded_at = envelope["recorded_at"].as_str().expect("string");
    // 2026-11-26T10:00:00.123456Z
    assert_eq!(recorded_at.len(), 27, "{recorded_at}");
    assert!(recorded_at.ends_with('Z'), "{recorded_at}");
    assert_eq!(&recorded_at[19..20], ".", "{recorded_at}");
    let back: eventstore::RecordedEvent = serde_json::from_value(envelope).expect("deserialize");
    assert_eq!(back, recorded);
}

#[tokio::test]
async fn recorded_at_does_not_go_back_when_the_database_clock_steps_back() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("lead");
    store
        .append(single(&stream, ExpectedVersion::NoStream, events(1)))
        .await
        .expect("append");
    // An event recorded an hour ahead stands for a clock that has since stepped back an hour.
    let client = database.connect().await;
    client
        .batch_execute(&format!(
            "insert into events (position, event_id, stream_id, stream_version, event_type, \
                 schema_version, recorded_at, data, metadata) \
             select position + 1, gen_random_uuid(), '{stream}', stream_version + 1, 'Tested', 1, \
                 clock_timestamp() + interval '1 hour', '{{}}', '{{}}' \
             from events order by position desc limit 1"
        ))
        .await
        .expect("insert an event from the future");
    store
        .append(single(&stream, ExpectedVersion::Exact(2), events(1)))
        .await
        .expect("append after the clock step");

    let log = store.read_all(0, 10, None).await.expect("read_all");
    assert_eq!(log.len(), 3);
    assert!(
        log[2].recorded_at >= log[1].recorded_at,
        "recorded_at went back from {} to {}",
        log[1].recorded_at,
        log[2].recorded_at
    );
}
