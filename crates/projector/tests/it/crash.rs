//! The projector killed between commit and acknowledgement, and between apply and commit: after
//! a restart the read models equal a rebuild.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use projector::{FaultHook, FaultPoint, Projection, ProjectorError};

use crate::support::{Harness, history};

/// Fires at `point` on the `nth` time the pipeline projection passes it.
fn fault_at(point: FaultPoint, nth: usize) -> FaultHook {
    let seen = Arc::new(AtomicUsize::new(0));
    Arc::new(move |projection, at| {
        projection == Projection::Pipeline
            && at == point
            && seen.fetch_add(1, Ordering::SeqCst) + 1 == nth
    })
}

async fn crash_then_restart(point: FaultPoint) {
    let harness = Harness::new().await;
    let publisher = harness.publisher();
    history::run(&harness.handler, 20, 400, 4, 11).await;

    let crashing = harness.projector(Some(fault_at(point, 2)));
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), crashing.task)
        .await
        .expect("the fault fires")
        .unwrap();
    assert!(
        matches!(outcome, Err(ProjectorError::InjectedFault(at)) if at == point),
        "{outcome:?}"
    );

    // More commands while it is down, then a restart.
    history::run(&harness.handler, 5, 100, 1, 12).await;
    let restarted = harness.projector(None);
    let head = harness.head().await;
    harness.caught_up(head).await;
    restarted.stop().await.unwrap();
    publisher.stop().await;

    harness.assert_matches_fold().await;
    let live = harness.snapshot().await;
    harness.rebuild_all().await;
    assert_eq!(harness.snapshot().await, live);
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_commit_and_ack() {
    crash_then_restart(FaultPoint::BeforeAck).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_apply_and_commit() {
    crash_then_restart(FaultPoint::BeforeCommit).await;
}
