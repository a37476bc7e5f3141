//! A smoke run of the bench, so that it cannot rot: tiny counts, and assertions that it ran and
//! produced figures, never about speed.

use std::time::Duration;

use bench::{BenchOptions, Scenario};

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| testkit::DEFAULT_DATABASE_URL.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_commands_run_reports_every_figure_beside_its_baseline() {
    platform::init_test_tracing();
    let options = BenchOptions {
        scenario: Scenario::Commands,
        seconds: Duration::from_millis(300),
        clients: vec![1, 4],
        deals: 5,
        json: true,
    };
    let report = bench::run(&database_url(), &options)
        .await
        .expect("bench runs");
    for clients in [1, 4] {
        let commands = report.figure("commands", clients).expect("commands figure");
        assert!(
            commands.count > 0,
            "no command was sent at {clients} clients"
        );
        assert_eq!(commands.errors, 0, "commands failed at {clients} clients");
        assert!(commands.latency.is_some());
        let baseline = report
            .figure("baseline-insert", clients)
            .expect("baseline figure");
        assert!(baseline.count >= commands.count.min(1_000));
        assert!(commands.ratio.is_some_and(|ratio| ratio > 0.0));
    }
    let json = serde_json::to_value(&report).expect("report serialises");
    assert!(json["settings"]["synchronous_commit"].is_string());
    assert!(report.to_table().contains("baseline-insert"));
}
