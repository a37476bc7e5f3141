//! Live read models equal, row for row, what a rebuild produces from the store.

use crate::support::{Harness, history};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_read_models_equal_a_rebuild_after_a_random_history() {
    let harness = Harness::new().await;
    let publisher = harness.publisher();
    let projector = harness.projector(None);

    history::run(&harness.handler, 200, 5_000, 8, 4).await;
    let head = harness.head().await;
    harness.caught_up(head).await;
    projector.stop().await.unwrap();
    publisher.stop().await;

    let live = harness.snapshot().await;
    assert!(
        live.iter()
            .any(|(table, rows)| table == "deals" && rows.len() == 200)
    );
    harness.assert_matches_fold().await;

    harness.rebuild_all().await;
    let rebuilt = harness.snapshot().await;
    for ((table, live_rows), (_, rebuilt_rows)) in live.iter().zip(&rebuilt) {
        assert_eq!(live_rows.len(), rebuilt_rows.len(), "rows of {table}");
        assert!(
            live_rows == rebuilt_rows,
            "table {table} differs after a rebuild"
        );
    }
    harness.finish().await;
}
