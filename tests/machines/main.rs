//! The several-machines suite: the product as it runs on several nodes, on the chaos suite's
//! harness (tests/chaos: private PostgreSQL and nats-server, the load and its ledger, the
//! invariants). Two scenarios, run one after the other:
//!
//! - two instances of every service (api, relay, projector, workflow) under load, while the
//!   active relay, a projector, a workflow and an api are killed with SIGKILL round after round;
//! - one instance of each against a three-node JetStream cluster whose events stream has three
//!   replicas, while one node is killed under load and later started again.
//!
//! Afterwards the chaos suite's promises must hold: nothing acknowledged is lost, nothing is
//! duplicated, the stream holds the log in order, the read models equal a replay and every due
//! follow-up fired once. Every process also serves `/healthz`, `/readyz` and `/metrics` on its
//! admin address, checked along the way.
//!
//! Sizes: about a minute each by default; `DEALSTREAM_CHAOS=long` repeats the rounds for
//! `DEALSTREAM_CHAOS_MINUTES` (default 10).

#[path = "../chaos/cluster.rs"]
mod cluster;
#[allow(
    dead_code,
    reason = "this suite injects its own faults; it uses the supervisor"
)]
#[path = "../chaos/faults.rs"]
mod faults;
#[path = "../chaos/invariants.rs"]
mod invariants;
#[path = "../chaos/load.rs"]
mod load;
#[allow(dead_code, reason = "shared with the chaos suite")]
#[path = "../chaos/settle.rs"]
mod settle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use cluster::{NATS_STREAM, Nats, Postgres, Role, RunDir, SUBJECT_PREFIX, Services, free_port};
use load::Load;
pub use settle::Rng;
use settle::{SETTLE, create_token, quick_rules, read_models_match_replay, seed, wait_quiet};

/// The two scenarios share two cores; one at a time keeps each within its time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Load workers per API instance.
const WORKERS_PER_API: u64 = 4;

/// How long faults go on: one round by default, minutes with `DEALSTREAM_CHAOS=long`.
fn chaos_for() -> Duration {
    match std::env::var("DEALSTREAM_CHAOS").as_deref() {
        Ok("long") => {
            let minutes: u64 = std::env::var("DEALSTREAM_CHAOS_MINUTES")
                .ok()
                .map(|minutes| {
                    minutes
                        .parse()
                        .expect("DEALSTREAM_CHAOS_MINUTES is a whole number")
                })
                .unwrap_or(10);
            Duration::from_secs(60 * minutes)
        }
        Ok("quick") | Err(_) => Duration::ZERO,
        Ok(other) => panic!("DEALSTREAM_CHAOS is `quick` or `long`, not {other:?}"),
    }
}

/// The ports of one service instance.
#[derive(Clone, Copy)]
struct Ports {
    http: u16,
    admin: u16,
}

/// One run: the servers, the services, the load on every API instance.
struct Deployment {
    // Declared in drop order: services before servers, the run directory last.
    services: Arc<Mutex<Services>>,
    loads: Vec<Load>,
    ports: Vec<(Role, usize, Ports)>,
    database_url: String,
    nats_url: String,
    /// Held only to be stopped and removed after the services.
    _postgres: Postgres,
    _run: RunDir,
}

impl Deployment {
    /// `nats_url` is what the services get (a cluster's servers, comma-separated);
    /// `check_nats_url` one server, for the checks.
    async fn start(
        run: RunDir,
        postgres: Postgres,
        nats_url: String,
        check_nats_url: String,
        instances: usize,
    ) -> Deployment {
        let rules = run.path.join("rules.toml");
        std::fs::write(&rules, quick_rules()).expect("write the rules file");
        let ports: Vec<(Role, usize, Ports)> = Role::ALL
            .into_iter()
            .flat_map(|role| (0..instances).map(move |instance| (role, instance)))
            .map(|(role, instance)| {
                let ports = Ports {
                    http: free_port(),
                    admin: free_port(),
                };
                (role, instance, ports)
            })
            .collect();
        let port_table = ports.clone();
        let mut services = Services::replicated(
            &run,
            vec![
                ("DATABASE_URL", postgres.url()),
                ("NATS_URL", nats_url.clone()),
                ("DEALSTREAM_CONFIG", rules.display().to_string()),
                ("DEALSTREAM_NATS_STREAM", NATS_STREAM.to_owned()),
                ("DEALSTREAM_SUBJECT_PREFIX", SUBJECT_PREFIX.to_owned()),
                ("RUST_LOG", "info,tokio_postgres=warn".to_owned()),
            ],
            instances,
            move |role, instance| {
                let (_, _, ports) = port_table
                    .iter()
                    .find(|(r, i, _)| *r == role && *i == instance)
                    .expect("every instance has ports");
                vec![
                    ("DEALSTREAM_HTTP_ADDR", format!("127.0.0.1:{}", ports.http)),
                    (
                        "DEALSTREAM_ADMIN_ADDR",
                        format!("127.0.0.1:{}", ports.admin),
                    ),
                ]
            },
        );
        let token = create_token(&services).await;
        services.start_all();
        let loads: Vec<Load> = ports
            .iter()
            .filter(|(role, _, _)| *role == Role::Api)
            .map(|(_, _, ports)| Load::new(ports.http, &token))
            .collect();
        for load in &loads {
            assert!(
                load.wait_ready(Duration::from_secs(90)).await,
                "an api never became ready; see its log"
            );
        }
        Deployment {
            services: Arc::new(Mutex::new(services)),
            loads,
            ports,
            database_url: postgres.url(),
            nats_url: check_nats_url,
            _postgres: postgres,
            _run: run,
        }
    }

    fn admin_port(&self, role: Role, instance: usize) -> u16 {
        self.ports
            .iter()
            .find(|(r, i, _)| *r == role && *i == instance)
            .map(|(_, _, ports)| ports.admin)
            .expect("every instance has an admin port")
    }

    /// The relay instance whose `/readyz` says it is the active publisher, waiting for one.
    async fn active_relay(&self, instances: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for instance in 0..instances {
                let readiness = admin_get(self.admin_port(Role::Relay, instance), "/readyz").await;
                if readiness
                    .ok()
                    .and_then(|body| serde_json::from_str::<Value>(&body).ok())
                    .is_some_and(|body| body["checks"]["relay"]["active"] == Value::Bool(true))
                {
                    return instance;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no relay reported itself active within a minute"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A GET on an admin address; the body, or why there is none.
async fn admin_get(port: u16, path: &str) -> Result<String, String> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|error| error.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// Every instance answers `/healthz` and `/readyz`, and its `/metrics` names only
/// `dealstream_` metrics, each with HELP text; exactly one relay is active.
async fn check_admin(deployment: &Deployment) -> Vec<String> {
    let mut violations = Vec::new();
    let mut active_relays = 0;
    for (role, instance, ports) in &deployment.ports {
        let who = format!("{role} {instance}");
        if let Err(error) = admin_get(ports.admin, "/healthz").await {
            violations.push(format!("{who}: /healthz: {error}"));
        }
        match admin_get(ports.admin, "/readyz").await {
            Ok(body) => {
                let body: Value = serde_json::from_str(&body).unwrap_or_default();
                if body["checks"]["relay"]["active"] == Value::Bool(true) {
                    active_relays += 1;
                }
            }
            Err(error) => violations.push(format!("{who}: /readyz: {error}")),
        }
        match admin_get(ports.admin, "/metrics").await {
            Ok(text) => violations.extend(
                metric_violations(&text)
                    .into_iter()
                    .map(|violation| format!("{who}: {violation}")),
            ),
            Err(error) => violations.push(format!("{who}: /metrics: {error}")),
        }
    }
    if active_relays != 1 {
        violations.push(format!(
            "{active_relays} relays report themselves active, not one"
        ));
    }
    violations
}

/// Metric families without the `dealstream_` prefix or without HELP text.
fn metric_violations(text: &str) -> Vec<String> {
    let helped: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let mut violations = Vec::new();
    for family in text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
    {
        if !family.starts_with("dealstream_") {
            violations.push(format!("metric {family} lacks the dealstream_ prefix"));
        }
        if !helped.contains(family) {
            violations.push(format!("metric {family} has no HELP text"));
        }
    }
    violations
}

/// Starts the load on every API instance; the returned flag stops it.
fn start_load(
    deployment: &Deployment,
    seed: u64,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (api, load) in deployment.loads.iter().enumerate() {
        for index in 0..WORKERS_PER_API {
            let stream = (api as u64) * WORKERS_PER_API + index + 1;
            let rng = Rng::new(seed ^ stream.wrapping_mul(0x2545_f491_4f6c_dd1d));
            workers.push(tokio::spawn(load::worker(load.clone(), rng, stop.clone())));
        }
    }
    (stop, workers)
}

/// Stops the load and the services, then checks every promise; panics listing what broke.
async fn finish_and_check(
    deployment: Deployment,
    stop_load: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    stop_supervisor: Arc<AtomicBool>,
    supervisor: tokio::task::JoinHandle<()>,
    what: &str,
    seed: u64,
) {
    stop_load.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }
    tokio::time::sleep(SETTLE).await;
    let quiet_at = wait_quiet(&deployment.database_url, &deployment.nats_url).await;
    let admin_violations = check_admin(&deployment).await;
    stop_supervisor.store(true, Ordering::Relaxed);
    supervisor.await.expect("the supervisor panicked");
    let (stopped_cleanly, unexpected_exits) = {
        let mut services = deployment.services.lock().await;
        let clean = services.stop_all().await;
        (clean, std::mem::take(&mut services.unexpected_exits))
    };

    let mut acknowledged = Vec::new();
    let mut server_errors = Vec::new();
    let mut abandoned = 0;
    for load in &deployment.loads {
        let mut ledger = load.ledger.lock().expect("the ledger");
        acknowledged.append(&mut ledger.acknowledged);
        server_errors.append(&mut ledger.server_errors);
        abandoned += ledger.abandoned;
    }
    let client = cluster::connect(&deployment.database_url).await;
    let events = invariants::load_events(&client).await;
    let mut violations: Vec<(&str, Vec<String>)> =
        vec![("the log", invariants::check_log(&events))];
    let (acknowledged_violations, with_events) =
        invariants::check_acknowledged(&events, &acknowledged);
    violations.push(("acknowledged commands", acknowledged_violations));
    violations.push((
        "the JetStream stream",
        invariants::check_stream(&deployment.nats_url, &events).await,
    ));
    let (read_model_violations, rows) =
        read_models_match_replay(&client, &deployment.services, events.len() as i64).await;
    violations.push(("read models", read_model_violations));
    let (follow_up_violations, follow_ups) = invariants::check_follow_ups(&events, quiet_at);
    violations.push(("follow-ups", follow_up_violations));
    violations.push(("5xx other than 503", server_errors));
    violations.push(("admin addresses", admin_violations));
    let mut liveness: Vec<String> = unexpected_exits
        .iter()
        .map(|exit| format!("{exit} without being asked to"))
        .collect();
    if abandoned > 0 {
        liveness.push(format!("{abandoned} commands were abandoned"));
    }
    if !stopped_cleanly {
        liveness.push("a service did not stop cleanly on SIGTERM; see its log".to_owned());
    }
    violations.push(("liveness", liveness));
    println!(
        "{what} (seed {seed}): {} commands acknowledged ({with_events} with events), {} events, \
         {} follow-ups fired of {} scheduled, {rows} read-model rows equal to a replay",
        acknowledged.len(),
        events.len(),
        follow_ups.fired,
        follow_ups.scheduled,
    );
    let failed: Vec<String> = violations
        .iter()
        .filter(|(_, found)| !found.is_empty())
        .map(|(name, found)| {
            let listed: Vec<&str> = found.iter().take(20).map(String::as_str).collect();
            format!(
                "{name}: {} violation(s)\n    {}",
                found.len(),
                listed.join("\n    ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{what} (seed {seed}) broke promises:\n  {}",
        failed.join("\n  ")
    );
    assert!(
        acknowledged.len() >= 100,
        "the run was too small to prove anything: {} commands",
        acknowledged.len()
    );
    drop(client);
    drop(deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_of_every_service_keep_the_promises_while_instances_are_killed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let seed = seed();
    println!("machines: two instances of everything, seed {seed}");
    let mut rng = Rng::new(seed);
    let run = RunDir::create(seed);
    let postgres = Postgres::start(&run).await;
    let nats = Nats::start(&run).await;
    let deployment = Deployment::start(run, postgres, nats.url(), nats.url(), 2).await;
    let stop_supervisor = Arc::new(AtomicBool::new(false));
    let supervisor = tokio::spawn(faults::supervise(
        Arc::downgrade(&deployment.services),
        stop_supervisor.clone(),
    ));
    let (stop_load, workers) = start_load(&deployment, seed);

    let began = Instant::now();
    let mut kills = 0;
    loop {
        let active = deployment.active_relay(2).await;
        let mut round = vec![
            (Role::Relay, active),
            (Role::Projector, rng.below(2)),
            (Role::Workflow, rng.below(2)),
            (Role::Api, rng.below(2)),
        ];
        rng.shuffle(&mut round);
        for (role, instance) in round {
            tokio::time::sleep(Duration::from_millis(rng.between(1_500, 3_000))).await;
            let at = began.elapsed().as_secs_f64();
            println!("machines: {at:6.1}s kill -9 {role} {instance}");
            deployment
                .services
                .lock()
                .await
                .kill_instance(role, instance);
            kills += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            deployment
                .services
                .lock()
                .await
                .start_instance(role, instance);
        }
        if began.elapsed() >= chaos_for() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(kills >= 4);
    finish_and_check(
        deployment,
        stop_load,
        workers,
        stop_supervisor,
        supervisor,
        "two instances of everything",
        seed,
    )
    .await;
    drop(nats);
}

/// Creates the events stream and the workflow's notification stream with three replicas, as
/// an operator sets up a cluster (the relay keeps the replicas of a stream it finds), retrying
/// while the cluster elects its JetStream leader.
async fn create_replicated_streams(nats_url: &str) {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to the NATS cluster");
    let jetstream = async_nats::jetstream::new(client);
    let streams = [
        (NATS_STREAM.to_owned(), format!("{SUBJECT_PREFIX}.events.>")),
        (
            format!("{NATS_STREAM}_NOTIFICATIONS"),
            format!("{SUBJECT_PREFIX}.notifications.>"),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, subjects) in streams {
        loop {
            let created = jetstream
                .create_stream(async_nats::jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![subjects.clone()],
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: 3,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => break,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "the cluster did not accept stream {name}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

async fn stream_replicas(nats_url: &str) -> usize {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to the NATS cluster");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(NATS_STREAM)
        .await
        .expect("the events stream");
    stream
        .info()
        .await
        .expect("stream info")
        .config
        .num_replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_one_node_of_a_three_node_nats_cluster_loses_and_stops_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let seed = seed();
    println!("machines: three-node NATS cluster, seed {seed}");
    let mut rng = Rng::new(seed);
    let run = RunDir::create(seed);
    let postgres = Postgres::start(&run).await;
    let mut nodes = Nats::start_cluster(&run, 3).await;
    let nats_url = nodes.iter().map(Nats::url).collect::<Vec<_>>().join(",");
    let first_node = nodes[0].url();
    create_replicated_streams(&first_node).await;
    let deployment = Deployment::start(run, postgres, nats_url, first_node.clone(), 1).await;
    let stop_supervisor = Arc::new(AtomicBool::new(false));
    let supervisor = tokio::spawn(faults::supervise(
        Arc::downgrade(&deployment.services),
        stop_supervisor.clone(),
    ));
    let (stop_load, workers) = start_load(&deployment, seed);

    let began = Instant::now();
    loop {
        let victim = rng.below(nodes.len());
        tokio::time::sleep(Duration::from_secs(rng.between(3, 5))).await;
        println!(
            "machines: {:6.1}s kill -9 nats node {victim}",
            began.elapsed().as_secs_f64()
        );
        nodes[victim].kill();
        // Long enough for the stream and consumers to elect new leaders and go on.
        tokio::time::sleep(Duration::from_secs(rng.between(8, 12))).await;
        println!(
            "machines: {:6.1}s start nats node {victim} again",
            began.elapsed().as_secs_f64()
        );
        nodes[victim].start_again().await;
        if began.elapsed() >= chaos_for() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stream_replicas(&first_node).await, 3);
    finish_and_check(
        deployment,
        stop_load,
        workers,
        stop_supervisor,
        supervisor,
        "three-node NATS cluster",
        seed,
    )
    .await;
    drop(nodes);
}
