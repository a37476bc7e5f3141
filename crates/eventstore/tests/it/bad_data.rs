use eventstore::{AppendError, ExpectedVersion, NewEvent};
use serde_json::json;
use testkit::TestDb;

use crate::{AppendLock, event, events, let_requests_queue, new_stream, occupy_appender, single};

fn poisoned() -> NewEvent {
    NewEvent {
        data: json!({ "summary": "nul \u{0000} inside" }),
        ..event("ActivityLogged")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_postgres_refuses_fails_only_its_own_request() {
    let database = TestDb::new().await;
    let store = database.store();

    let lock = AppendLock::take(&database).await;
    let blocker = occupy_appender(&store).await;
    let bad_stream = new_stream("opportunity");
    let good_streams: Vec<String> = (0..5).map(|_| new_stream("opportunity")).collect();
    let bad = {
        let store = store.clone();
        let request = single(&bad_stream, ExpectedVersion::NoStream, vec![poisoned()]);
        tokio::spawn(async move { store.append(request).await })
    };
    let good: Vec<_> = good_streams
        .iter()
        .map(|stream| {
            let store = store.clone();
            let request = single(stream, ExpectedVersion::NoStream, events(2));
            tokio::spawn(async move { store.append(request).await })
        })
        .collect();
    let_requests_queue().await;
    lock.release().await;
    blocker.await.expect("blocker");

    match bad.await.expect("bad task") {
        Err(AppendError::Unexpected(_)) => {}
        other => panic!("expected the poisoned request to fail, got {other:?}"),
    }
    for task in good {
        let outcome = task.await.expect("good task").expect("good append");
        assert_eq!(outcome.streams[0].version, 2);
    }
    assert!(
        store
            .read_stream(&bad_stream)
            .await
            .expect("read")
            .is_empty()
    );
    for stream in &good_streams {
        assert_eq!(store.read_stream(stream).await.expect("read").len(), 2);
    }
    // Nothing of the failed attempt leaks into the positions: still gapless.
    let positions: Vec<i64> = store
        .read_all(0, 1000, None)
        .await
        .expect("read_all")
        .iter()
        .map(|recorded| recorded.position)
        .collect();
    assert_eq!(positions, (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn poisoned_metadata_alone_is_refused_and_the_store_keeps_working() {
    let database = TestDb::new().await;
    let store = database.store();
    let stream = new_stream("lead");
    let request = single(
        &stream,
        ExpectedVersion::NoStream,
        vec![NewEvent {
            metadata: json!({ "actor": "\u{0000}" }),
            ..event("LeadCaptured")
        }],
    );
    match store.append(request).await {
        Err(AppendError::Unexpected(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    let outcome = store
        .append(single(&stream, ExpectedVersion::NoStream, events(1)))
        .await
        .expect("append after a refusal");
    assert_eq!(outcome.position, 1);
}
