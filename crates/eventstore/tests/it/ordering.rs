use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use eventstore::{EventStore, ExpectedVersion};
use testkit::TestDb;
use uuid::Uuid;

use crate::{AppendLock, events, new_stream, single};

/// Polls `read_all(position > last)` until told to stop, then drains once more. Returns every
/// position it saw, in the order it saw them, and fails if a page ever goes backwards.
fn follow(
    store: EventStore,
    page_size: i64,
    stop: Arc<AtomicBool>,
    highest_seen: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut last = 0;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let page = store
                .read_all(last, page_size, None)
                .await
                .expect("read_all");
            for recorded in &page {
                assert!(
                    recorded.position > last,
                    "follower saw position {} after {last}",
                    recorded.position
                );
                last = recorded.position;
                seen.push(recorded.position);
            }
            highest_seen.store(last, Ordering::SeqCst);
            if page.is_empty() {
                if stopping {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_append_transaction_holds_back_later_positions() {
    let database = TestDb::new().await;
    let store = database.store();
    store
        .append(single(
            &new_stream("lead"),
            ExpectedVersion::NoStream,
            events(5),
        ))
        .await
        .expect("seed");

    let stop = Arc::new(AtomicBool::new(false));
    let highest_seen = Arc::new(AtomicI64::new(0));
    let follower = follow(store.clone(), 100, stop.clone(), highest_seen.clone());

    // A writer in another "process" that takes the lock, inserts, and does not commit yet.
    let held = AppendLock::take(&database).await;
    let head: i64 = held
        .client
        .query_one("select coalesce(max(position), 0)::bigint from events", &[])
        .await
        .expect("head")
        .get(0);
    let held_position = head + 1;
    held.client
        .execute(
            "insert into events (position, event_id, stream_id, stream_version, event_type,
                                 schema_version, recorded_at, data, metadata)
             values ($1, $2, $3, 1, 'Held', 1, clock_timestamp(), '{}', '{}')",
            &[&held_position, &Uuid::now_v7(), &new_stream("lead")],
        )
        .await
        .expect("held insert");

    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(single(
                        &new_stream("lead"),
                        ExpectedVersion::NoStream,
                        events(1),
                    ))
                    .await
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        writers.iter().all(|writer| !writer.is_finished()),
        "appends must wait for the open transaction's lock"
    );
    assert_eq!(
        highest_seen.load(Ordering::SeqCst),
        head,
        "nothing beyond the committed prefix is visible while the transaction is open"
    );

    held.release().await;
    for writer in writers {
        let outcome = writer.await.expect("writer task").expect("append");
        assert!(
            outcome.position > held_position,
            "appends queued behind the open transaction get later positions"
        );
    }

    let total = store.head_position().await.expect("head");
    assert_eq!(total, head + 1 + 8);
    while highest_seen.load(Ordering::SeqCst) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let seen = follower.await.expect("follower task");
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "everything, once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_under_concurrent_writers_sees_exactly_the_stored_log() {
    const WRITERS: usize = 16;
    const APPENDS_PER_WRITER: usize = 20;

    let database = TestDb::new().await;
    // Four handles with four appenders contend for the lock like four processes.
    let stores: Vec<EventStore> = (0..4).map(|_| database.store()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let highest_seen = Arc::new(AtomicI64::new(0));
    // A small page size makes the follower page through partially committed batches.
    let follower = follow(stores[0].clone(), 7, stop.clone(), highest_seen);

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = stores[writer % stores.len()].clone();
            tokio::spawn(async move {
                let streams = [new_stream("opportunity"), new_stream("lead")];
                for append in 0..APPENDS_PER_WRITER {
                    store
                        .append(single(
                            &streams[append % 2],
                            ExpectedVersion::Any,
                            events(1 + append % 3),
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
    stop.store(true, Ordering::SeqCst);
    let seen = follower.await.expect("follower task");

    let stored: Vec<i64> = stores[0]
        .read_all(0, 1_000_000, None)
        .await
        .expect("read_all")
        .iter()
        .map(|recorded| recorded.position)
        .collect();
    assert_eq!(seen, stored, "none skipped, none twice");
    let expected_total: usize = (0..APPENDS_PER_WRITER).map(|append| 1 + append % 3).sum();
    let expected_total = i64::try_from(expected_total * WRITERS).expect("small");
    assert_eq!(
        stored,
        (1..=expected_total).collect::<Vec<_>>(),
        "gapless positions"
    );
}
