//! The rebuild's swap against a long-running reader of the old tables: it never makes other
//! readers queue behind it for longer than its lock timeout, it completes once the reader is
//! done, and it fails with a clear error when the reader outlasts every attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use platform::CancellationToken;
use projector::{Projection, ProjectorError, RebuildOptions, RebuildPhase};

use crate::support::{Harness, history};

fn options(attempts: u32) -> RebuildOptions {
    RebuildOptions {
        swap_lock_timeout: Duration::from_millis(200),
        swap_attempts: attempts,
        swap_retry_pause: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A transaction that has read `deals` and stays open, holding its ACCESS SHARE lock.
async fn long_reader(harness: &Harness) -> tokio_postgres::Client {
    let reader = harness.db.connect().await;
    reader
        .batch_execute("begin; select count(*) from deals")
        .await
        .unwrap();
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_reader_holds_up_the_swap_but_no_other_reader() {
    platform::init_test_tracing();
    let harness = Harness::new().await;
    history::run(&harness.handler, 10, 150, 2, 31).await;
    let long_reader = long_reader(&harness).await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let rebuild = tokio::spawn({
        let store = harness.store.clone();
        let attempts = attempts.clone();
        async move {
            projector::rebuild(
                Projection::Pipeline,
                &store,
                &options(1_000),
                &CancellationToken::new(),
                &mut |progress| {
                    if progress.phase == RebuildPhase::Swapping {
                        attempts.fetch_add(1, Ordering::SeqCst);
                    }
                },
            )
            .await
        }
    });

    // Readers keep being served while the swap tries and gives way, three times over.
    let deadline = Instant::now() + Duration::from_secs(30);
    while attempts.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the swap was not retried");
        assert!(!rebuild.is_finished(), "the rebuild ended: {rebuild:?}");
        let reader = harness.db.connect().await;
        let read = tokio::time::timeout(
            Duration::from_secs(3),
            reader.query_one("select count(*) from deals", &[]),
        )
        .await;
        assert!(
            read.is_ok(),
            "a reader waited behind the swap for more than 3 s"
        );
        read.unwrap().unwrap();
    }

    long_reader.batch_execute("commit").await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), rebuild)
        .await
        .expect("the rebuild completes once the long reader is done")
        .unwrap()
        .unwrap();
    assert_eq!(report.position, harness.head().await);
    projector::rebuild(
        Projection::Forecast,
        &harness.store,
        &RebuildOptions::default(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    harness.assert_matches_fold().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_blocked_on_every_attempt_fails_clearly_and_keeps_the_live_tables() {
    platform::init_test_tracing();
    let harness = Harness::new().await;
    history::run(&harness.handler, 5, 50, 1, 32).await;
    let long_reader = long_reader(&harness).await;

    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        projector::rebuild(
            Projection::Pipeline,
            &harness.store,
            &options(3),
            &CancellationToken::new(),
            &mut |_| {},
        ),
    )
    .await
    .expect("the swap gives up instead of waiting for the reader");
    let error = outcome.expect_err("the swap cannot take the old tables");
    assert!(
        matches!(error, ProjectorError::SwapBlocked { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("long-running queries"),
        "{error}"
    );

    long_reader.batch_execute("commit").await.unwrap();
    let checkpoint: i64 = harness
        .db
        .connect()
        .await
        .query_one(
            "select coalesce(max(position), 0) from projection_checkpoints \
             where projection = 'pipeline'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(checkpoint, 0, "the live tables were left as they were");
    harness.finish().await;
}
