use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use eventstore::{AppendError, EventStore, ExpectedVersion};
use testkit::TestDb;
use tokio::sync::Barrier;

use crate::{AppendLock, event, events, let_requests_queue, new_stream, occupy_appender, single};

const REQUESTS: usize = 64;
const STREAMS: usize = 4;

/// Request `index` targets stream `index % STREAMS`; this is its expectation. Every stream is
/// at version 1 before the requests are sent.
fn expectation(index: usize) -> ExpectedVersion {
    match (index / STREAMS) % 4 {
        0 => ExpectedVersion::Any,
        1 => ExpectedVersion::Exact(1),
        // Stale: the stream already exists.
        2 => ExpectedVersion::NoStream,
        // From the future: four Any winners can never bring a stream this far.
        _ => ExpectedVersion::Exact(1_000),
    }
}

async fn seeded_streams(store: &EventStore) -> Vec<String> {
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let stream = new_stream("opportunity");
        store
            .append(single(&stream, ExpectedVersion::NoStream, events(1)))
            .await
            .expect("seed");
        streams.push(stream);
    }
    streams
}

/// Sends the 64 requests from 64 tasks; `start` is awaited by each task before it sends.
async fn send_all(
    store: &EventStore,
    streams: &[String],
    start: Arc<Barrier>,
) -> Vec<
    tokio::task::JoinHandle<(
        usize,
        uuid::Uuid,
        Result<eventstore::AppendOutcome, AppendError>,
    )>,
> {
    (0..REQUESTS)
        .map(|index| {
            let store = store.clone();
            let stream = streams[index % STREAMS].clone();
            let start = start.clone();
            tokio::spawn(async move {
                let new_event = event("AmountChanged");
                let event_id = new_event.event_id;
                start.wait().await;
                let result = store
                    .append(single(&stream, expectation(index), vec![new_event]))
                    .await;
                (index, event_id, result)
            })
        })
        .collect()
}

/// Checks that every request got its own correct answer and that losers wrote nothing.
async fn check_answers(
    store: &EventStore,
    streams: &[String],
    answers: Vec<(
        usize,
        uuid::Uuid,
        Result<eventstore::AppendOutcome, AppendError>,
    )>,
) {
    let mut winners_per_stream: HashMap<usize, Vec<(i64, uuid::Uuid)>> = HashMap::new();
    let mut losers = HashSet::new();
    for (index, event_id, result) in answers {
        let stream_index = index % STREAMS;
        match (expectation(index), result) {
            (ExpectedVersion::Any, Ok(outcome)) => {
                winners_per_stream
                    .entry(stream_index)
                    .or_default()
                    .push((outcome.streams[0].version, event_id));
            }
            (ExpectedVersion::Exact(1), Ok(outcome)) => {
                assert_eq!(
                    outcome.streams[0].version, 2,
                    "Exact(1) can only win as version 2"
                );
                winners_per_stream
                    .entry(stream_index)
                    .or_default()
                    .push((2, event_id));
            }
            (
                expected,
                Err(AppendError::Conflict {
                    stream_id,
                    expected: reported,
                    actual,
                }),
            ) => {
                assert_ne!(expected, ExpectedVersion::Any, "Any never conflicts");
                assert_eq!(stream_id, streams[stream_index]);
                assert_eq!(reported, expected);
                assert!(actual >= 1);
                assert!(!expected.matches(actual));
                losers.insert(event_id);
            }
            (expected, other) => panic!("request {index} ({expected:?}) got {other:?}"),
        }
    }

    for (stream_index, stream) in streams.iter().enumerate() {
        let mut winners = winners_per_stream.remove(&stream_index).unwrap_or_default();
        let exact_winners = winners.iter().filter(|(version, _)| *version == 2).count();
        // Four Any requests always win; at most one Exact(1) can, and only if it came first.
        assert!(
            winners.len() == 4 || winners.len() == 5,
            "winners: {winners:?}"
        );
        assert!(exact_winners <= 1);
        winners.sort();
        let stored = store.read_stream(stream).await.expect("read stream");
        assert_eq!(stored.len(), 1 + winners.len(), "losers wrote nothing");
        for (offset, (version, event_id)) in winners.iter().enumerate() {
            let recorded = &stored[offset + 1];
            assert_eq!(recorded.stream_version, *version);
            assert_eq!(recorded.event_id, *event_id);
        }
        assert!(
            stored
                .iter()
                .all(|recorded| !losers.contains(&recorded.event_id))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_appends_share_one_transaction_and_get_their_own_answers() {
    let database = TestDb::new().await;
    let store = database.store();
    let streams = seeded_streams(&store).await;
    let committed_before = store.batches_committed();

    // Hold the lock so the requests pile up in the appender's queue, then let them go at once.
    let lock = AppendLock::take(&database).await;
    let blocker = occupy_appender(&store).await;
    let tasks = send_all(&store, &streams, Arc::new(Barrier::new(1))).await;
    let_requests_queue().await;
    lock.release().await;
    blocker.await.expect("blocker");

    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    let transactions = store.batches_committed() - committed_before;
    // The blocker's transaction plus, normally, one for all 64 requests; a request whose task
    // was scheduled late may land in a third.
    assert!(
        transactions <= 3,
        "expected group commit, got {transactions} transactions for {REQUESTS} requests"
    );
    check_answers(&store, &streams, answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_batched_without_help() {
    let database = TestDb::new().await;
    let store = database.store();
    let streams = seeded_streams(&store).await;
    let committed_before = store.batches_committed();

    let tasks = send_all(&store, &streams, Arc::new(Barrier::new(REQUESTS))).await;
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    let transactions = store.batches_committed() - committed_before;
    assert!(
        transactions < u64::try_from(REQUESTS).expect("small"),
        "expected fewer transactions than requests, got {transactions}"
    );
    check_answers(&store, &streams, answers).await;
}
