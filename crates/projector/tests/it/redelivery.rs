//! The same batch delivered twice changes nothing the second time.

use projector::Projection;

use crate::support::{Harness, history};

#[tokio::test]
async fn the_same_batch_applied_twice_changes_nothing_the_second_time() {
    let harness = Harness::new().await;
    history::run(&harness.handler, 10, 200, 2, 7).await;
    let events = harness.all_events().await;
    let (first, second) = events.split_at(events.len() / 2);

    for projection in Projection::ALL {
        projector::apply_batch(&harness.store, projection, first)
            .await
            .unwrap();
    }
    let once = harness.snapshot().await;
    for projection in Projection::ALL {
        let reached = projector::apply_batch(&harness.store, projection, first)
            .await
            .unwrap();
        assert_eq!(reached, first.last().unwrap().position);
    }
    assert_eq!(
        harness.snapshot().await,
        once,
        "a redelivered batch changed the read models"
    );

    // A batch overlapping what was applied applies only the new part.
    let overlapping: Vec<_> = events[events.len() / 4..].to_vec();
    for projection in Projection::ALL {
        projector::apply_batch(&harness.store, projection, &overlapping)
            .await
            .unwrap();
        projector::apply_batch(&harness.store, projection, second)
            .await
            .unwrap();
    }
    harness.assert_matches_fold().await;
    harness.finish().await;
}

#[tokio::test]
async fn a_batch_with_a_gap_is_completed_from_the_store() {
    let harness = Harness::new().await;
    history::run(&harness.handler, 5, 100, 1, 9).await;
    let events = harness.all_events().await;
    // Only the last few events are "delivered": the rest must come from the store.
    let tail = &events[events.len() - 3..];
    for projection in Projection::ALL {
        projector::apply_batch(&harness.store, projection, tail)
            .await
            .unwrap();
    }
    harness.assert_matches_fold().await;
    harness.finish().await;
}
