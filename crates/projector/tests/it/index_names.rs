//! A rebuild leaves the tables with the index and constraint names the migrations gave them, so
//! that a later migration can refer to them.

use crate::support::{Harness, history};

async fn names(harness: &Harness) -> Vec<(String, String)> {
    let client = harness.db.pool.get().await.unwrap();
    let indexes = client
        .query(
            "select tablename::text, indexname::text from pg_indexes \
             where schemaname = current_schema() \
             union all \
             select conrelid::regclass::text, conname::text from pg_constraint \
             where connamespace = current_schema()::regnamespace \
             order by 1, 2",
            &[],
        )
        .await
        .unwrap();
    indexes.iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test]
async fn a_rebuild_keeps_the_index_names() {
    let harness = Harness::new().await;
    history::run(&harness.handler, 3, 10, 1, 61).await;
    let before = names(&harness).await;
    assert!(before.iter().any(|(_, name)| name == "deals_stage_id"));
    for _ in 0..2 {
        harness.rebuild_all().await;
        assert_eq!(names(&harness).await, before);
    }
    harness.finish().await;
}
