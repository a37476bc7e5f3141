use eventstore::{AppendError, AppendRequest, ExpectedVersion};
use testkit::TestDb;

use crate::{AppendLock, events, let_requests_queue, new_stream, occupy_appender, single};

fn with_fingerprint(request: &AppendRequest, fingerprint: Option<&[u8]>) -> AppendRequest {
    AppendRequest {
        fingerprint: fingerprint.map(<[u8]>::to_vec),
        ..request.clone()
    }
}

#[tokio::test]
async fn a_repeated_command_appends_once_and_returns_the_first_outcome() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("lead");
    let request = with_fingerprint(
        &single(&stream, ExpectedVersion::NoStream, events(2)),
        Some(b"first"),
    );

    let first = store.append(request.clone()).await.expect("first append");
    assert!(!first.replayed);
    // Other appends move the head on; the replay must still return the original position.
    store
        .append(single(&new_stream("lead"), ExpectedVersion::Any, events(3)))
        .await
        .expect("other append");

    // A retry may carry freshly generated event ids; the command id alone decides.
    let retry = AppendRequest {
        streams: vec![eventstore::StreamAppend {
            events: events(2),
            ..request.streams[0].clone()
        }],
        ..request.clone()
    };
    let second = store.append(retry).await.expect("replay");
    assert!(second.replayed);
    assert_eq!(second.streams, first.streams);
    assert_eq!(second.position, first.position);
    assert_eq!(store.read_stream(&stream).await.expect("read").len(), 2);

    for fingerprint in [Some(&b"second"[..]), None] {
        match store.append(with_fingerprint(&request, fingerprint)).await {
            Err(AppendError::FingerprintMismatch { command_id }) => {
                assert_eq!(command_id, request.command_id);
            }
            other => panic!("expected a fingerprint mismatch, got {other:?}"),
        }
    }
    assert_eq!(store.read_stream(&stream).await.expect("read").len(), 2);
}

#[tokio::test]
async fn a_command_without_events_is_remembered_too() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("opportunity");
    store
        .append(single(&stream, ExpectedVersion::NoStream, events(1)))
        .await
        .expect("seed");
    let request = single(&stream, ExpectedVersion::Exact(1), Vec::new());

    let first = store.append(request.clone()).await.expect("no-op append");
    assert_eq!(first.streams[0].version, 1);
    assert_eq!(first.position, store.head_position().await.expect("head"));

    store
        .append(single(&stream, ExpectedVersion::Exact(1), events(1)))
        .await
        .expect("move on");
    // The expectation no longer holds, but the command was handled: the first answer wins.
    let second = store.append(request).await.expect("replay");
    assert!(second.replayed);
    assert_eq!(second.streams, first.streams);
    assert_eq!(second.position, first.position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_command_twice_in_one_batch_appends_once() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("lead");
    let request = with_fingerprint(
        &single(&stream, ExpectedVersion::NoStream, events(1)),
        Some(b"same"),
    );
    let other_content = with_fingerprint(
        &single(&stream, ExpectedVersion::NoStream, events(1)),
        Some(b"different"),
    );
    let other_content = AppendRequest {
        command_id: request.command_id,
        ..other_content
    };

    let lock = AppendLock::take(&database).await;
    let blocker = occupy_appender(&store).await;
    let committed_before = store.batches_committed();
    let sent: Vec<_> = [
        request.clone(),
        request.clone(),
        request.clone(),
        other_content,
    ]
    .into_iter()
    .map(|request| {
        let store = store.clone();
        tokio::spawn(async move {
            let fingerprint = request.fingerprint.clone();
            (fingerprint, store.append(request).await)
        })
    })
    .collect();
    let_requests_queue().await;
    lock.release().await;
    blocker.await.expect("blocker");

    let mut answers = Vec::new();
    for task in sent {
        answers.push(task.await.expect("request task"));
    }
    assert!(
        store.batches_committed() - committed_before <= 2,
        "the blocker's batch plus one for the duplicates"
    );

    let originals: Vec<_> = answers
        .iter()
        .filter_map(|(fingerprint, answer)| match answer {
            Ok(outcome) if !outcome.replayed => Some((fingerprint.clone(), outcome.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        originals.len(),
        1,
        "exactly one request appended: {answers:?}"
    );
    let (winning_fingerprint, original) = &originals[0];
    for (fingerprint, answer) in &answers {
        match answer {
            Ok(outcome) if outcome.replayed => {
                assert_eq!(fingerprint, winning_fingerprint);
                assert_eq!(outcome.streams, original.streams);
                assert_eq!(outcome.position, original.position);
            }
            Ok(_) => {}
            Err(AppendError::FingerprintMismatch { command_id }) => {
                assert_ne!(fingerprint, winning_fingerprint);
                assert_eq!(*command_id, request.command_id);
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(store.read_stream(&stream).await.expect("read").len(), 1);
}

#[tokio::test]
async fn command_ids_older_than_the_retention_are_forgotten_and_their_events_kept() {
    let database = TestDb::new().await;
    let store = database.store();
    let old = single(&new_stream("lead"), ExpectedVersion::NoStream, events(1));
    let recent = single(&new_stream("lead"), ExpectedVersion::NoStream, events(1));
    let (old_id, recent_id) = (old.command_id, recent.command_id);
    store.append(old).await.expect("append");
    store.append(recent).await.expect("append");
    let client = database.connect().await;
    client
        .execute(
            "update commands set recorded_at = recorded_at - interval '31 days' \
             where command_id = $1",
            &[&old_id],
        )
        .await
        .expect("age the first command");

    let forgotten = store
        .prune_commands(std::time::Duration::from_secs(30 * 24 * 3600))
        .await
        .expect("prune");
    assert_eq!(forgotten, 1);
    assert!(store.find_command(old_id).await.expect("find").is_none());
    assert!(store.find_command(recent_id).await.expect("find").is_some());
    assert_eq!(store.read_all(0, 10, None).await.expect("read").len(), 2);
}
