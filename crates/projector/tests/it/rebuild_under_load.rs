//! Queries keep answering consistent data during a rebuild while commands keep arriving; after
//! the swap nothing is missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use projector::{Projection, RebuildPhase};
use serde_json::Value;

use crate::read_your_writes::{api_client, spawn_api};
use crate::support::{Harness, Random, history};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_answer_during_a_rebuild_under_load() {
    let harness = Harness::new().await;
    let publisher = harness.publisher();
    let projector = harness.projector(None);
    history::run(&harness.handler, 100, 3_000, 8, 21).await;
    harness.caught_up(harness.head().await).await;

    let (address, api_shutdown) = spawn_api(&harness).await;
    let done = Arc::new(AtomicBool::new(false));

    // Commands keep arriving: new deals only, so the number of open deals never drops.
    let writer = {
        let handler = harness.handler.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut random = Random::new(99);
            let mut created = 0;
            while !done.load(Ordering::SeqCst) {
                let id = domain::values::OpportunityId(uuid::Uuid::now_v7());
                let mut fresh = false;
                history::step(&handler, &mut random, id, &mut fresh, &mut Vec::new()).await;
                created += 1;
            }
            created
        })
    };

    // Readers check that every answer is a success and internally consistent: the board's deal
    // count never goes down while deals are only being added.
    let reader = {
        let done = done.clone();
        let client = api_client(&harness).await;
        tokio::spawn(async move {
            let mut last_count = 0;
            let mut answers = 0;
            while !done.load(Ordering::SeqCst) {
                let reply = client
                    .get(format!("http://{address}/v1/pipelines/default/board"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status().as_u16(), 200);
                let board: Value = reply.json().await.unwrap();
                let count: i64 = board["columns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|column| column["totals"].as_array().unwrap())
                    .map(|total| total["count"].as_i64().unwrap())
                    .sum();
                assert!(
                    count >= last_count,
                    "open deals went from {last_count} to {count}"
                );
                last_count = count;
                for path in [
                    "/v1/opportunities?limit=100",
                    "/v1/forecast?period=quarter",
                    "/v1/follow-ups",
                ] {
                    let reply = client
                        .get(format!("http://{address}{path}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(reply.status().as_u16(), 200, "{path}");
                }
                answers += 1;
            }
            answers
        })
    };

    let mut phases = Vec::new();
    for projection in Projection::ALL {
        let report = projector::rebuild(
            projection,
            &harness.store,
            &projector::RebuildOptions {
                batch_size: 1_000,
                ..Default::default()
            },
            &platform::CancellationToken::new(),
            &mut |progress| phases.push(progress.phase),
        )
        .await
        .unwrap();
        assert!(report.events_applied > 0);
    }
    assert!(phases.contains(&RebuildPhase::Swapping));
    assert_eq!(phases.last(), Some(&RebuildPhase::Done));

    done.store(true, Ordering::SeqCst);
    let created = writer.await.unwrap();
    let answers = reader.await.unwrap();
    assert!(created > 0 && answers > 0);

    harness.caught_up(harness.head().await).await;
    harness.assert_matches_fold().await;
    api_shutdown.cancel();
    projector.stop().await.unwrap();
    publisher.stop().await;
    harness.finish().await;
}
