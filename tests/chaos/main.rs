//! The chaos suite (issue 9): the product as it is deployed, api, relay, projector and workflow
//! each a `dealstream` process of its own, against a private PostgreSQL cluster and a private
//! nats-server, under a steady mixed load of commands, while services are killed with SIGKILL,
//! frozen with SIGSTOP for longer than the timeouts, and NATS and PostgreSQL are restarted.
//! Once everything is back and quiet it checks the store's, the relay's, the projectors' and the workflow's promises (see
//! [`invariants`]) and prints what it did.
//!
//! Sizes: quick by default (one round of every fault, about two minutes in all);
//! `DEALSTREAM_CHAOS=long` runs rounds for ten minutes (`DEALSTREAM_CHAOS_MINUTES` changes
//! that). `DEALSTREAM_CHAOS_SEED` replays a run's choice and order of faults and commands.
//! docs/reliability.md describes the suite and the figures of a long run.

mod cluster;
mod faults;
mod invariants;
mod load;
mod settle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use cluster::{NATS_STREAM, Nats, Postgres, RunDir, SUBJECT_PREFIX, Services, free_port};
use faults::Injector;
use load::Load;
pub use settle::Rng;
use settle::{SETTLE, create_token, quick_rules, read_models_match_replay, seed, wait_quiet};

/// How big a run is.
struct Size {
    name: &'static str,
    workers: u64,
    /// Faults go on until this much time has passed, in whole rounds (at least one).
    chaos_for: Duration,
    /// Pause before each fault, in milliseconds.
    gap_ms: (u64, u64),
}

impl Size {
    fn from_env() -> Size {
        match std::env::var("DEALSTREAM_CHAOS").as_deref() {
            Ok("long") => {
                let minutes = std::env::var("DEALSTREAM_CHAOS_MINUTES")
                    .ok()
                    .map(|minutes| {
                        minutes
                            .parse()
                            .expect("DEALSTREAM_CHAOS_MINUTES is a whole number")
                    })
                    .unwrap_or(10);
                Size {
                    name: "long",
                    workers: 8,
                    chaos_for: Duration::from_secs(60 * minutes),
                    gap_ms: (2_000, 6_000),
                }
            }
            Ok("quick") | Err(_) => Size {
                name: "quick",
                workers: 10,
                chaos_for: Duration::ZERO,
                gap_ms: (2_000, 4_000),
            },
            Ok(other) => panic!("DEALSTREAM_CHAOS is `quick` or `long`, not {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promises_hold_under_kills_freezes_and_server_restarts() {
    let size = Size::from_env();
    let seed = seed();
    println!(
        "chaos: size {}, seed {seed} (DEALSTREAM_CHAOS_SEED={seed} replays it)",
        size.name
    );
    let began = Instant::now();
    let mut rng = Rng::new(seed);

    // Declared first so it is dropped last: the guards below stop their processes before the
    // directory holding their data goes.
    let run = RunDir::create(seed);
    let postgres = Postgres::start(&run).await;
    let nats = Nats::start(&run).await;
    let rules = run.path.join("rules.toml");
    std::fs::write(&rules, quick_rules()).expect("write the rules file");
    let api_port = free_port();
    let mut services = Services::new(
        &run,
        vec![
            ("DATABASE_URL", postgres.url()),
            ("NATS_URL", nats.url()),
            ("DEALSTREAM_HTTP_ADDR", format!("127.0.0.1:{api_port}")),
            ("DEALSTREAM_CONFIG", rules.display().to_string()),
            ("DEALSTREAM_NATS_STREAM", NATS_STREAM.to_owned()),
            ("DEALSTREAM_SUBJECT_PREFIX", SUBJECT_PREFIX.to_owned()),
            ("RUST_LOG", "info,tokio_postgres=warn".to_owned()),
        ],
    );
    // The API wants a bearer token: the CLI makes one, as an operator would.
    let token = create_token(&services).await;
    services.start_all();
    let services = Arc::new(Mutex::new(services));
    let database_url = postgres.url();
    let nats_url = nats.url();
    let mut injector = Injector {
        services: services.clone(),
        nats,
        postgres,
        // Longer than the store's 5 s lock and idle-transaction timeouts and the API's 15 s
        // request timeout, so that each of them has to act while a process is frozen.
        freeze: Duration::from_secs(16),
        downtime: Duration::from_secs(1),
        tally: faults::Tally::default(),
    };
    drop(services);

    let load = Load::new(api_port, &token);
    assert!(
        load.wait_ready(Duration::from_secs(60)).await,
        "the api never became ready; see its log"
    );
    let started_in = began.elapsed();
    let stop_load = Arc::new(AtomicBool::new(false));
    let stop_supervisor = Arc::new(AtomicBool::new(false));
    let supervisor = tokio::spawn(faults::supervise(
        Arc::downgrade(&injector.services),
        stop_supervisor.clone(),
    ));
    let workers: Vec<_> = (0..size.workers)
        .map(|index| {
            let rng = Rng::new(seed ^ (index + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            tokio::spawn(load::worker(load.clone(), rng, stop_load.clone()))
        })
        .collect();

    let chaos_began = Instant::now();
    loop {
        for fault in faults::round(&mut rng) {
            tokio::time::sleep(Duration::from_millis(
                rng.between(size.gap_ms.0, size.gap_ms.1),
            ))
            .await;
            let at = chaos_began.elapsed().as_secs_f64();
            println!("chaos: {at:6.1}s {fault}");
            injector.inject(fault).await;
        }
        if chaos_began.elapsed() >= size.chaos_for {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(size.gap_ms.1)).await;
    stop_load.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }
    let chaos_lasted = chaos_began.elapsed();

    tokio::time::sleep(SETTLE).await;
    let quiet_at = wait_quiet(&database_url, &nats_url).await;
    stop_supervisor.store(true, Ordering::Relaxed);
    supervisor.await.expect("the supervisor panicked");
    let (stopped_cleanly, unexpected_exits) = {
        let mut services = injector.services.lock().await;
        let clean = services.stop_all().await;
        (clean, std::mem::take(&mut services.unexpected_exits))
    };

    let mut violations: Vec<(&str, Vec<String>)> = Vec::new();
    let client = cluster::connect(&database_url).await;
    let events = invariants::load_events(&client).await;
    violations.push(("the log", invariants::check_log(&events)));
    let ledger = std::mem::take(&mut *load.ledger.lock().expect("the ledger"));
    let (acknowledged_violations, commands_with_events) =
        invariants::check_acknowledged(&events, &ledger.acknowledged);
    violations.push(("acknowledged commands", acknowledged_violations));
    violations.push((
        "the JetStream stream",
        invariants::check_stream(&nats_url, &events).await,
    ));
    let (read_model_violations, read_model_rows) =
        read_models_match_replay(&client, &injector.services, events.len() as i64).await;
    violations.push(("read models", read_model_violations));
    let (follow_up_violations, follow_ups) = invariants::check_follow_ups(&events, quiet_at);
    violations.push(("follow-ups", follow_up_violations));
    violations.push(("5xx other than 503", ledger.server_errors.clone()));
    let mut liveness = Vec::new();
    if ledger.abandoned > 0 {
        liveness.push(format!(
            "{} commands got no answer within two minutes of retries",
            ledger.abandoned
        ));
    }
    // No service exits because PostgreSQL or NATS went away for a while. The
    // supervisor restarted them so that the other checks still mean something.
    liveness.extend(
        unexpected_exits
            .iter()
            .map(|exit| format!("{exit} without being asked to")),
    );
    if !stopped_cleanly {
        liveness.push("a service did not stop cleanly on SIGTERM; see its log".to_owned());
    }
    violations.push(("liveness", liveness));

    let tally = &injector.tally;
    let follow_up_dues = events
        .iter()
        .filter(|event| event.event_type == "FollowUpDue")
        .count();
    println!(
        "chaos figures (size {}, seed {seed}): start-up {:.0}s, chaos {:.0}s, total {:.0}s\n  \
         faults: {} kills {:?}, {} freezes of {:?} {:?}, {} nats-server restarts, postgres \
         restarts {:?}\n  \
         unexpected exits (restarted by the supervisor): {} {:?}\n  \
         commands: {} acknowledged ({} with events, the others no-ops), {} refused, {} abandoned; {} queries; {} requests without \
         an answer; statuses {:?}\n  \
         events: {} stored; {} follow-ups scheduled, {} of them fired, {} reminders fired \
         ({} FollowUpDue); {} read-model rows equal to a rebuild",
        size.name,
        started_in.as_secs_f64(),
        chaos_lasted.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        tally.kills.values().sum::<u32>(),
        tally.kills,
        tally.freezes.values().sum::<u32>(),
        injector.freeze,
        tally.freezes,
        tally.nats_restarts,
        tally.postgres_restarts,
        unexpected_exits.len(),
        unexpected_exits,
        ledger.acknowledged.len(),
        commands_with_events,
        ledger.refused.len(),
        ledger.abandoned,
        ledger.queries,
        ledger.transport_errors,
        ledger.statuses,
        events.len(),
        follow_ups.scheduled,
        follow_ups.fired,
        follow_ups.reminders_fired,
        follow_up_dues,
        read_model_rows,
    );
    for refusal in ledger.refused.iter().take(10) {
        println!("  refused: {refusal}");
    }

    let failed: Vec<String> = violations
        .iter()
        .filter(|(_, found)| !found.is_empty())
        .map(|(what, found)| {
            let listed: Vec<&str> = found.iter().take(20).map(String::as_str).collect();
            format!(
                "{what}: {} violation(s)\n    {}",
                found.len(),
                listed.join("\n    ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "chaos run (seed {seed}) broke promises:\n  {}",
        failed.join("\n  ")
    );
    assert!(
        ledger.acknowledged.len() >= 200 && tally.faults() >= 9,
        "the run was too small to prove anything: {} commands, {} faults",
        ledger.acknowledged.len(),
        tally.faults()
    );
}
