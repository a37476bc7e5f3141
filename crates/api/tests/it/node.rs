//! A whole node in-process: the API of [`TestApp`] plus the relay and both projectors, on a
//! JetStream stream and subject prefix of its own, so that queries with `min_position` are
//! answered from read models that really follow the store. The external tools (schemathesis,
//! the generated client) need exactly that: a 503 from a read model nobody feeds would be a
//! failure of the harness, not of the API.

use std::str::FromStr;
use std::time::Duration;

use platform::{CancellationToken, ConnectionUrl, StreamName, SubjectPrefix};
use projector::{Projection, ProjectorConfig};
use tokio::task::JoinHandle;

use crate::helpers::TestApp;

const NATS_URL_DEFAULT: &str = "nats://127.0.0.1:4222";

pub struct Node {
    pub app: TestApp,
    jetstream: async_nats::jetstream::Context,
    stream_name: String,
    stop: CancellationToken,
    relay: JoinHandle<Result<(), relay::RelayError>>,
    projector: JoinHandle<Result<(), projector::ProjectorError>>,
}

impl Node {
    pub async fn spawn() -> Node {
        let app = TestApp::spawn().await;
        let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| NATS_URL_DEFAULT.to_owned());
        let client = async_nats::connect(&nats_url)
            .await
            .unwrap_or_else(|error| panic!("cannot reach NATS at NATS_URL={nats_url}: {error}"));
        let token = uuid::Uuid::now_v7().simple().to_string();
        let stream_name = format!("TEST_API_{token}");
        let prefix = format!("ta{token}");
        let relay_config = relay::RelayConfig::new(
            ConnectionUrl::parse("NATS_URL", &nats_url).expect("a valid NATS_URL"),
            app.database_config(),
            StreamName::from_str(&stream_name).expect("a valid stream name"),
            SubjectPrefix::from_str(&prefix).expect("a valid subject prefix"),
        );
        let mut projector_config = ProjectorConfig::new(&nats_url, &stream_name, &prefix);
        projector_config.retry_interval = Duration::from_millis(200);
        let stop = CancellationToken::new();
        let relay = tokio::spawn(relay::run_with_client(
            relay_config,
            client.clone(),
            app.store.clone(),
            stop.clone(),
        ));
        let projector = tokio::spawn(projector::run_with_client(
            projector_config,
            client.clone(),
            app.store.clone(),
            &Projection::ALL,
            stop.clone(),
        ));
        Node {
            app,
            jetstream: async_nats::jetstream::new(client),
            stream_name,
            stop,
            relay,
            projector,
        }
    }

    /// Stops the relay and the projectors, fails if either stopped early or with an error, and
    /// deletes the node's stream.
    pub async fn finish(self) {
        let early = self.relay.is_finished() || self.projector.is_finished();
        self.stop.cancel();
        let relayed = stopped(self.relay).await;
        let projected = stopped(self.projector).await;
        let _ = self.jetstream.delete_stream(&self.stream_name).await;
        assert!(relayed.is_ok(), "the relay failed: {relayed:?}");
        assert!(projected.is_ok(), "the projector failed: {projected:?}");
        assert!(
            !early,
            "the relay or a projector stopped before the test ended"
        );
    }
}

async fn stopped<E>(service: JoinHandle<Result<(), E>>) -> Result<(), E> {
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("a service did not stop within 30 s")
        .expect("a service panicked")
}
