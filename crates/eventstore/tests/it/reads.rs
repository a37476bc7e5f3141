use eventstore::{ExpectedVersion, pool_from_url};
use testkit::TestDb;

use crate::{events, new_stream, single};

#[tokio::test]
async fn read_all_pages_and_filters_by_category() {
    let database = TestDb::new().await;
    let store = database.store();
    assert_eq!(store.head_position().await.expect("head"), 0);
    let lead = new_stream("lead");
    let opportunity = new_stream("opportunity");
    for _ in 0..3 {
        store
            .append(single(&lead, ExpectedVersion::Any, events(1)))
            .await
            .expect("append");
        store
            .append(single(&opportunity, ExpectedVersion::Any, events(2)))
            .await
            .expect("append");
    }
    assert_eq!(store.head_position().await.expect("head"), 9);
    assert_eq!(
        store.stream_version(&opportunity).await.expect("version"),
        6
    );
    assert_eq!(
        store
            .stream_version(&new_stream("lead"))
            .await
            .expect("version"),
        0
    );

    let page = store.read_all(2, 3, None).await.expect("page");
    let positions: Vec<i64> = page.iter().map(|recorded| recorded.position).collect();
    assert_eq!(positions, vec![3, 4, 5]);

    let leads = store.read_all(0, 100, Some("lead")).await.expect("leads");
    let positions: Vec<i64> = leads.iter().map(|recorded| recorded.position).collect();
    assert_eq!(positions, vec![1, 4, 7]);
    assert!(leads.iter().all(|recorded| recorded.category() == "lead"));
    assert!(store.read_all(0, 0, None).await.expect("empty").is_empty());

    let stream = store.read_stream(&opportunity).await.expect("stream");
    let versions: Vec<i64> = stream
        .iter()
        .map(|recorded| recorded.stream_version)
        .collect();
    assert_eq!(versions, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_test_url_reaches_the_same_schema() {
    let database = TestDb::new().await;
    let pool = pool_from_url(&database.url, 2).expect("pool from url");
    let client = pool.get().await.expect("connection");
    let schema: String = client
        .query_one("select current_schema()::text", &[])
        .await
        .expect("schema")
        .get(0);
    assert_eq!(schema, database.schema);
}

#[tokio::test]
async fn pooled_sessions_ask_the_server_to_probe_a_vanished_client() {
    let database = TestDb::new().await;
    let client = database.pool.get().await.expect("a pooled connection");
    let idle: String = client
        .query_one("show tcp_keepalives_idle", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(idle, "30");
    let search_path: String = client
        .query_one("show search_path", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(
        search_path, database.schema,
        "the URL's own options are kept"
    );
}
