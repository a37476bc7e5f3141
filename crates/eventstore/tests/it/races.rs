//! Writers that bypass the append lock (another tool, an old version) can still race the
//! appender on the unique constraints; the loser must get a typed answer, never a crash.

use std::time::Duration;

use eventstore::{AppendError, AppendOutcome, ExpectedVersion, StreamVersion};
use testkit::TestDb;
use uuid::Uuid;

use crate::{events, new_stream, single};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_version_race_to_an_unlocked_writer_is_a_conflict() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("opportunity");

    let racer = database.connect().await;
    racer.batch_execute("begin").await.expect("begin");
    racer
        .execute(
            "insert into events (position, event_id, stream_id, stream_version, event_type,
                                 schema_version, recorded_at, data, metadata)
             values (1000, $1, $2, 1, 'Raced', 1, clock_timestamp(), '{}', '{}')",
            &[&Uuid::now_v7(), &stream],
        )
        .await
        .expect("racing insert");

    let append = {
        let store = store.clone();
        let request = single(&stream, ExpectedVersion::NoStream, events(1));
        tokio::spawn(async move { store.append(request).await })
    };
    // The appender cannot see the uncommitted row, accepts, and blocks on the unique index.
    tokio::time::sleep(Duration::from_millis(300)).await;
    racer.batch_execute("commit").await.expect("commit");

    match append.await.expect("append task") {
        Err(AppendError::Conflict {
            stream_id,
            expected,
            actual,
        }) => {
            assert_eq!(stream_id, stream);
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.read_stream(&stream).await.expect("read").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_command_id_race_is_a_replay() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("lead");
    let request = single(&stream, ExpectedVersion::NoStream, events(1));
    let stored = AppendOutcome {
        streams: vec![StreamVersion {
            stream_id: stream.clone(),
            version: 7,
        }],
        position: 42,
        replayed: false,
    };

    let racer = database.connect().await;
    racer.batch_execute("begin").await.expect("begin");
    racer
        .execute(
            "insert into commands (command_id, fingerprint, outcome, recorded_at)
             values ($1, null, $2, clock_timestamp())",
            &[
                &request.command_id,
                &serde_json::to_value(&stored).expect("outcome json"),
            ],
        )
        .await
        .expect("racing insert");

    let append = {
        let store = store.clone();
        tokio::spawn(async move { store.append(request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    racer.batch_execute("commit").await.expect("commit");

    let outcome = append.await.expect("append task").expect("replay");
    assert!(outcome.replayed);
    assert_eq!(outcome.streams, stored.streams);
    assert_eq!(outcome.position, stored.position);
    assert!(store.read_stream(&stream).await.expect("read").is_empty());
}
