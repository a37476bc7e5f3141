use std::sync::Arc;

use eventstore::{AppendError, ExpectedVersion};
use testkit::TestDb;
use tokio::sync::Barrier;

use crate::{event, new_stream, single};

const WRITERS: usize = 32;
const ROUNDS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_exact_expectations_never_share_a_version() {
    let database = TestDb::new().await;
    // Two handles, each with its own appender, behave like two processes.
    let stores = [database.store(), database.store()];
    let stream = new_stream("opportunity");
    let barrier = Arc::new(Barrier::new(WRITERS));

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = stores[writer % 2].clone();
            let stream = stream.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut attempts = Vec::new();
                barrier.wait().await;
                for _ in 0..ROUNDS {
                    let version = store.stream_version(&stream).await.expect("read version");
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    let new_event = event("StageChanged");
                    let event_id = new_event.event_id;
                    let result = store
                        .append(single(&stream, expected, vec![new_event]))
                        .await;
                    attempts.push((version, expected, event_id, result));
                }
                attempts
            })
        })
        .collect();

    let mut successes = Vec::new();
    let mut conflicts = 0;
    for writer in writers {
        for (read_version, expected, event_id, result) in writer.await.expect("writer task") {
            match result {
                Ok(outcome) => {
                    assert_eq!(outcome.streams.len(), 1);
                    assert_eq!(outcome.streams[0].version, read_version + 1);
                    assert!(!outcome.replayed);
                    successes.push((outcome.streams[0].version, event_id));
                }
                Err(AppendError::Conflict {
                    stream_id,
                    expected: reported,
                    actual,
                }) => {
                    assert_eq!(stream_id, stream);
                    assert_eq!(reported, expected);
                    assert!(
                        actual > read_version,
                        "a conflict means someone else moved on"
                    );
                    conflicts += 1;
                }
                Err(other) => panic!("unexpected append error: {other:?}"),
            }
        }
    }

    assert_eq!(successes.len() + conflicts, WRITERS * ROUNDS);
    assert!(!successes.is_empty());
    let stored = stores[0].read_stream(&stream).await.expect("read stream");
    assert_eq!(
        stored.len(),
        successes.len(),
        "one event per success, none per conflict"
    );
    successes.sort();
    for (index, (version, event_id)) in successes.iter().enumerate() {
        let expected_version = i64::try_from(index).expect("small") + 1;
        assert_eq!(*version, expected_version, "every version exactly once");
        assert_eq!(stored[index].stream_version, expected_version);
        assert_eq!(stored[index].event_id, *event_id);
    }
}
