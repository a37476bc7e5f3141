//! A smoke run of the bench, so that it cannot rot: tiny counts, and assertions that each
//! scenario ran and produced figures beside its baseline, never about speed.

use std::time::Duration;

use bench::{BenchOptions, Compare, Report, Scenario};

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| testkit::DEFAULT_DATABASE_URL.to_owned())
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Options small enough that every scenario takes a second or two.
fn tiny(scenario: Scenario) -> BenchOptions {
    let mut options = BenchOptions::defaults();
    options.scenario = scenario;
    options.seconds = Duration::from_millis(300);
    options.clients = vec![1, 4];
    options.deals = 5;
    options.rates = vec![50];
    options.stream_lengths = vec![2, 6];
    options.backlog = 2_000;
    options.rebuild_events = 5_000;
    options.asof_events = 5_000;
    options.asof_queries = 10;
    options.analytics_events = 5_000;
    options.timers = 20;
    options.json = true;
    options
}

async fn run(scenario: Scenario) -> Report {
    platform::init_test_tracing();
    let report = bench::run(&database_url(), &nats_url(), &tiny(scenario))
        .await
        .unwrap_or_else(|error| {
            panic!("bench {scenario:?} failed (set DATABASE_URL and NATS_URL): {error:#}")
        });
    let json = serde_json::to_value(&report).expect("report serialises");
    assert!(json["settings"]["postgres"]["synchronous_commit"].is_string());
    assert!(json["settings"]["nats_server_version"].is_string());
    report
}

/// The figure exists, counted something without errors, and has a ratio to its baseline.
fn assert_measured(report: &Report, scenario: &str, level: u64, baseline: &str) {
    let figure = report
        .figure(scenario, level)
        .unwrap_or_else(|| panic!("no {scenario} figure at {level}:\n{}", report.to_table()));
    assert!(figure.count > 0, "{scenario} measured nothing at {level}");
    assert_eq!(figure.errors, 0, "{scenario} had errors at {level}");
    assert_eq!(figure.baseline, Some(baseline));
    let base = report
        .figure(baseline, level)
        .unwrap_or_else(|| panic!("no {baseline} figure at {level}"));
    assert!(base.count > 0, "{baseline} measured nothing at {level}");
    assert!(
        figure.ratio.is_some_and(|ratio| ratio > 0.0),
        "{scenario} has no ratio to {baseline}"
    );
    assert!(report.to_table().contains(baseline));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_commands_run_reports_every_figure_beside_its_baseline() {
    let report = run(Scenario::Commands).await;
    for clients in [1, 4] {
        assert_measured(&report, "commands", clients, "baseline-insert");
        let commands = report.figure("commands", clients).expect("commands figure");
        assert!(commands.latency.is_some());
        let baseline = report
            .figure("baseline-insert", clients)
            .expect("baseline figure");
        assert!(baseline.count >= commands.count.min(1_000));
        // The message-db-style peer, read against the same plain inserts.
        assert_measured(&report, "baseline-function", clients, "baseline-insert");
        for cpu in ["server_cpu_ms", "postgres_cpu_ms", "generator_cpu_ms"] {
            assert!(
                commands.extra.get(cpu).is_some_and(|ms| *ms >= 0.0),
                "{cpu}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_stream_length_run_reads_each_length_against_the_shortest() {
    let report = run(Scenario::StreamLength).await;
    for length in [2, 6] {
        let figure = report
            .figure("stream-length", length)
            .unwrap_or_else(|| panic!("no stream-length figure at {length}"));
        assert!(figure.count > 0, "nothing measured at {length}");
        assert_eq!(figure.errors, 0, "errors at {length}");
        assert!(
            figure
                .extra
                .get("vs_shortest_streams")
                .is_some_and(|ratio| *ratio > 0.0),
            "no ratio at {length}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_lag_run_sees_every_command_in_the_read_model() {
    let report = run(Scenario::Lag).await;
    assert_measured(&report, "lag", 50, "lag-http");
    let lag = report.figure("lag", 50).expect("lag figure");
    assert_eq!(lag.compare, Compare::P99Latency);
    let http = report.figure("lag-http", 50).expect("lag-http figure");
    assert_eq!(
        lag.count, http.count,
        "every answered command became visible"
    );
    assert!(lag.latency.is_some() && http.latency.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_relay_run_publishes_the_whole_backlog() {
    let report = run(Scenario::Relay).await;
    assert_measured(
        &report,
        "relay",
        relay::DEFAULT_MAX_IN_FLIGHT as u64,
        "relay-raw",
    );
    let relay = report
        .figure("relay", relay::DEFAULT_MAX_IN_FLIGHT as u64)
        .expect("relay figure");
    assert!(relay.count >= 2_000, "the relay published the backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_rebuild_run_reports_memory_at_both_sizes() {
    let report = run(Scenario::Rebuild).await;
    for events in [1_000, 5_000] {
        assert_measured(&report, "rebuild", events, "rebuild-read");
        let rebuild = report.figure("rebuild", events).expect("rebuild figure");
        assert!(
            rebuild.count >= events,
            "the rebuild folded the whole history"
        );
        assert!(rebuild.extra.contains_key("peak_rss_mib"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_timers_run_fires_every_follow_up() {
    let report = run(Scenario::Timers).await;
    assert_measured(&report, "timers", 20, "timers-baseline");
    let timers = report.figure("timers", 20).expect("timers figure");
    assert_eq!(timers.count, 20);
    assert!(timers.latency.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_asof_run_reads_each_kind_of_instant_against_the_live_forecast() {
    let report = run(Scenario::Asof).await;
    for scenario in ["asof", "asof-old", "asof-recent"] {
        assert_measured(&report, scenario, 5_000, "asof-live");
        let figure = report.figure(scenario, 5_000).expect("asof figure");
        assert_eq!(figure.compare, Compare::P50Latency);
        assert_eq!(figure.count, 10);
    }
    let old = report.figure("asof-old", 5_000).expect("asof-old figure");
    assert!(
        old.extra
            .get("old_vs_recent_p50")
            .is_some_and(|ratio| *ratio > 0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_analytics_run_computes_win_rates_and_a_backtest_beside_the_read() {
    let report = run(Scenario::Analytics).await;
    for scenario in ["analytics-win-rates", "analytics-backtest"] {
        assert_measured(&report, scenario, 5_000, "analytics-read");
    }
    let rates = report
        .figure("analytics-win-rates", 5_000)
        .expect("win rates");
    // Half the generated deals are closed, those of the last year within the look-back.
    assert!(
        rates
            .extra
            .get("closes_counted")
            .is_some_and(|closes| *closes > 0.0)
    );
    let backtest = report
        .figure("analytics-backtest", 5_000)
        .expect("backtest");
    assert!(
        backtest
            .extra
            .get("quarters")
            .is_some_and(|quarters| *quarters >= 6.0)
    );
}
