use std::time::Duration;

use async_nats::jetstream;
use platform::CancellationToken;
use relay::TailOptions;
use testkit::TestDb;

use crate::{
    RunningRelay, append_concurrently, nats_url, relay_config, shared_client, store_events,
    stream_guard, wait_caught_up,
};

/// `tail --from-position N --subject opportunity.>` prints exactly the envelopes of that
/// category from position N on, in order, one JSON object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_envelopes_from_a_position_with_a_filter() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let config = relay_config(&database, &nats_url());
    let _cleanup = stream_guard(&config);
    append_concurrently(&store, 3, 90).await;
    let relay = RunningRelay::start(config.clone(), store.clone());
    wait_caught_up(&config, &store, Duration::from_secs(10)).await;

    let client = shared_client().await;
    let stream = jetstream::new(client.clone())
        .get_stream(config.stream_name.as_str())
        .await
        .expect("stream");
    for position in [1, 2, 45, 89, 90] {
        let sequence = relay::start_sequence(&stream, config.subject_prefix.as_str(), position)
            .await
            .expect("search");
        assert_eq!(sequence, position as u64, "the stream started empty");
    }
    assert_eq!(
        relay::start_sequence(&stream, config.subject_prefix.as_str(), 1000)
            .await
            .expect("search"),
        91,
        "past the end"
    );

    let expected: Vec<serde_json::Value> = store_events(&store)
        .await
        .into_iter()
        .filter(|event| event.position >= 40 && event.category() == "opportunity")
        .map(|event| serde_json::to_value(event).expect("envelope"))
        .collect();
    let mut options = TailOptions::new(config.stream_name.clone(), config.subject_prefix.clone());
    options.from_position = Some(40);
    options.subject = Some("opportunity.>".to_owned());
    options.max_events = Some(expected.len() as u64);
    let mut output = Vec::new();
    let printed = tokio::time::timeout(
        Duration::from_secs(10),
        relay::tail(
            client.clone(),
            options,
            &mut output,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("tail prints the existing events")
    .expect("tail");
    assert_eq!(printed as usize, expected.len());
    let lines: Vec<serde_json::Value> = String::from_utf8(output)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON envelope per line"))
        .collect();
    assert_eq!(lines, expected);

    // Following live: an event appended after the tail started is printed.
    let mut options = TailOptions::new(config.stream_name.clone(), config.subject_prefix.clone());
    options.max_events = Some(1);
    let follower = tokio::spawn(async move {
        let mut output = Vec::new();
        relay::tail(client, options, &mut output, CancellationToken::new())
            .await
            .map(|_| output)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    append_concurrently(&store, 1, 1).await;
    let output = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the live event is printed")
        .expect("task")
        .expect("tail");
    let line: serde_json::Value = serde_json::from_slice(&output).expect("envelope");
    assert_eq!(line["position"], 91);
    relay.stop().await;
}
