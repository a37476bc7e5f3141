use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, nats_url, relay_config, stream_guard, wait_caught_up,
};

fn value_of(rendered: &str, name: &str) -> f64 {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{rendered}"))
}

/// The relay's metrics reach a Prometheus recorder with the documented names and values.
/// A local recorder covers only its own thread, so everything runs on a current-thread runtime.
#[test]
fn metrics_report_published_events_and_lag() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let database = TestDb::new().await;
            let store = database.store();
            let config = relay_config(&database, &nats_url());
            let _cleanup = stream_guard(&config);
            append_concurrently(&store, 2, 30).await;
            let relay = RunningRelay::start(config.clone(), store.clone());
            wait_caught_up(&config, &store, Duration::from_secs(10)).await;
            // The lag gauges are refreshed when the relay finds nothing more to read.
            tokio::time::sleep(Duration::from_millis(200)).await;
            relay.stop().await;
        })
    });
    let rendered = handle.render();
    assert_eq!(
        value_of(&rendered, relay::metrics::EVENTS_PUBLISHED_TOTAL),
        30.0
    );
    assert_eq!(
        value_of(&rendered, relay::metrics::LAST_PUBLISHED_POSITION),
        30.0
    );
    assert_eq!(value_of(&rendered, relay::metrics::LAG_POSITIONS), 0.0);
    assert_eq!(value_of(&rendered, relay::metrics::LAG_SECONDS), 0.0);
}
