use eventstore::{AppendError, AppendRequest, ExpectedVersion, StreamAppend, StreamVersion};
use testkit::TestDb;
use uuid::Uuid;

use crate::{events, new_stream, single};

fn two_streams(
    first: &str,
    first_expected: ExpectedVersion,
    second: &str,
    second_expected: ExpectedVersion,
) -> AppendRequest {
    AppendRequest {
        command_id: Uuid::now_v7(),
        fingerprint: None,
        occurred_at: None,
        streams: vec![
            StreamAppend {
                stream_id: first.to_owned(),
                expected: first_expected,
                events: events(2),
            },
            StreamAppend {
                stream_id: second.to_owned(),
                expected: second_expected,
                events: events(1),
            },
        ],
    }
}

#[tokio::test]
async fn a_failed_expectation_on_the_second_stream_writes_nothing_to_either() {
    let database = TestDb::new().await;
    let store = database.store();
    let lead = new_stream("lead");
    let opportunity = new_stream("opportunity");
    store
        .append(single(&lead, ExpectedVersion::NoStream, events(1)))
        .await
        .expect("seed");
    let head = store.head_position().await.expect("head");

    let refused = two_streams(
        &opportunity,
        ExpectedVersion::NoStream,
        &lead,
        ExpectedVersion::Exact(3),
    );
    let error = store.append(refused.clone()).await.expect_err("conflict");
    match &error {
        AppendError::Conflict {
            stream_id,
            expected,
            actual,
        } => {
            assert_eq!(stream_id, &lead);
            assert_eq!(*expected, ExpectedVersion::Exact(3));
            assert_eq!(*actual, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("expected version 3"), "{message}");
    assert!(message.contains("actual version 1"), "{message}");

    assert!(
        store
            .read_stream(&opportunity)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(store.read_stream(&lead).await.expect("read").len(), 1);
    assert_eq!(store.head_position().await.expect("head"), head);

    // The refused command was not recorded: fixing the expectation under the same id appends.
    let fixed = AppendRequest {
        streams: vec![
            refused.streams[0].clone(),
            StreamAppend {
                expected: ExpectedVersion::Exact(1),
                ..refused.streams[1].clone()
            },
        ],
        ..refused
    };
    let outcome = store.append(fixed).await.expect("append");
    assert!(!outcome.replayed);
    assert_eq!(
        outcome.streams,
        vec![
            StreamVersion {
                stream_id: opportunity.clone(),
                version: 2
            },
            StreamVersion {
                stream_id: lead.clone(),
                version: 2
            },
        ]
    );
    assert_eq!(outcome.position, head + 3);
    let written = store.read_all(head, 100, None).await.expect("read");
    let positions: Vec<i64> = written.iter().map(|recorded| recorded.position).collect();
    assert_eq!(positions, vec![head + 1, head + 2, head + 3]);
    assert!(
        written
            .iter()
            .all(|recorded| recorded.recorded_at == written[0].recorded_at)
    );
}

#[tokio::test]
async fn the_same_stream_twice_in_one_request_is_checked_in_order() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("pipeline");
    let outcome = store
        .append(two_streams(
            &stream,
            ExpectedVersion::NoStream,
            &stream,
            ExpectedVersion::Exact(2),
        ))
        .await
        .expect("append");
    assert_eq!(outcome.streams[0].version, 2);
    assert_eq!(outcome.streams[1].version, 3);
    let versions: Vec<i64> = store
        .read_stream(&stream)
        .await
        .expect("read")
        .iter()
        .map(|recorded| recorded.stream_version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
}
