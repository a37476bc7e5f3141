//! PostgreSQL refusing the projector's statements for a passing reason (a deadlock, a
//! serialization failure, a plan invalidated by a migration, exhausted resources, a DBA's
//! timeouts) pauses the projector; it never stops it, and once the cause is gone the read models
//! catch up with nothing lost or applied twice.

use std::time::{Duration, Instant};

use crate::support::{Harness, Running, history};

/// Makes every update of the pipeline projection's checkpoint fail with the SQLSTATE in
/// `injected_fault` while it holds a row, and counts the failures in a sequence (which a
/// rollback does not undo). Only one projection fails, so that two failures are one retry.
const FAULT_TRIGGER: &str = "
    create table injected_fault (sqlstate text not null);
    create sequence injected_fault_hits;
    create function inject_fault() returns trigger language plpgsql as $$
    declare
        code text;
    begin
        select sqlstate into code from injected_fault limit 1;
        if code is not null and new.projection = 'pipeline' then
            perform nextval('injected_fault_hits');
            raise exception 'injected fault %', code using errcode = code;
        end if;
        return new;
    end $$;
    create trigger inject_fault before update on projection_checkpoints
        for each row execute function inject_fault();";

async fn hits(harness: &Harness) -> i64 {
    let client = harness.db.pool.get().await.unwrap();
    client
        .query_one(
            "select case when is_called then last_value else 0 end from injected_fault_hits",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_database_errors_pause_the_projector_until_the_cause_is_gone() {
    platform::init_test_tracing();
    let harness = Harness::new().await;
    let publisher = harness.publisher();
    history::run(&harness.handler, 10, 100, 2, 21).await;
    let running: Running = harness.projector(None);
    harness.caught_up(harness.head().await).await;
    let admin = harness.db.connect().await;
    admin.batch_execute(FAULT_TRIGGER).await.unwrap();

    let codes = [
        ("40001", "serialization failure"),
        ("40P01", "deadlock"),
        ("57014", "statement timeout"),
        ("55P03", "lock timeout"),
        ("0A000", "cached plan must not change result type"),
        ("53100", "disk full"),
        ("53200", "out of memory"),
        ("53300", "too many connections"),
        ("57P01", "admin shutdown"),
        ("58030", "I/O error"),
    ];
    for (seed, (code, name)) in (100..).zip(codes) {
        admin
            .execute("insert into injected_fault values ($1)", &[&code])
            .await
            .unwrap();
        let before = hits(&harness).await;
        history::run(&harness.handler, 2, 10, 1, seed).await;
        // Two failures: the first one was retried rather than ending the projector.
        let deadline = Instant::now() + Duration::from_secs(30);
        while hits(&harness).await < before + 2 {
            assert!(
                !running.task.is_finished(),
                "the projector stopped on {code} ({name}): {:?}",
                running.task
            );
            assert!(
                Instant::now() < deadline,
                "no retry after {code} ({name}) within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !running.task.is_finished(),
            "the projector stopped on {code} ({name})"
        );
        admin
            .execute("delete from injected_fault", &[])
            .await
            .unwrap();
        harness.caught_up(harness.head().await).await;
    }

    running.stop().await.unwrap();
    publisher.stop().await;
    harness.assert_matches_fold().await;
    harness.finish().await;
}
