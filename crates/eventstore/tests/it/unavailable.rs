use eventstore::{AppendError, EventStore, ExpectedVersion, StoreError, migrate, pool_from_url};

use crate::{events, single};

#[tokio::test]
async fn an_unreachable_database_is_unavailable_not_unexpected() {
    // Port 1 on the loopback interface refuses connections immediately.
    let pool = pool_from_url("postgres://postgres@127.0.0.1:1/dealstream", 2).expect("pool");
    let store = EventStore::new(pool.clone());
    match store
        .append(single("lead-x", ExpectedVersion::Any, events(1)))
        .await
    {
        Err(AppendError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        store.read_stream("lead-x").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.head_position().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        migrate(&pool).await,
        Err(StoreError::Unavailable(_))
    ));
}
