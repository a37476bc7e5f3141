use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use testkit::TestDb;
use uuid::Uuid;

use crate::{
    RunningRelay, append_concurrently, assert_stream_matches_store, relay_config, wait_caught_up,
};

/// A nats-server of the test's own, so it can be killed without disturbing other tests.
struct PrivateNats {
    port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    fn new() -> PrivateNats {
        // Port 0 lets the OS pick a free port; the listener is closed again before the server
        // binds it, a race that is harmless in practice.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let store_dir = std::env::temp_dir().join(format!("relay-nats-{}", Uuid::now_v7()));
        PrivateNats {
            port,
            store_dir,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server on the same port and store directory every time.
    async fn start(&mut self) {
        let binary =
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {binary} (set NATS_SERVER_BIN to a nats-server): {error}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server outright, as a crash or a network cut would look to the relay.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

/// NATS is unreachable when the relay starts and again in the middle of the run while 1,000
/// commands are accepted; when it returns, every event arrives, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_appended_while_nats_is_down_arrive_when_it_returns() {
    platform::init_test_tracing();
    let database = TestDb::new().await;
    let store = database.store();
    let mut nats = PrivateNats::new();
    let config = relay_config(&database, &nats.url());

    // Down from the start: the relay must keep trying, and appends keep working.
    let relay = RunningRelay::start(config.clone(), store.clone());
    append_concurrently(&store, 4, 400).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!relay.task.is_finished(), "the relay waits for NATS");
    assert_eq!(config.stats.last_published_position(), 0);

    nats.start().await;
    wait_caught_up(&config, &store, Duration::from_secs(20)).await;

    // Down in the middle of the run, while more commands are accepted.
    nats.kill();
    append_concurrently(&store, 4, 600).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!relay.task.is_finished(), "the relay survives the outage");
    assert_eq!(config.stats.last_published_position(), 400);

    nats.start().await;
    wait_caught_up(&config, &store, Duration::from_secs(30)).await;
    relay.stop().await;
    assert_eq!(store.head_position().await.expect("head"), 1_000);

    let client = async_nats::connect(nats.url()).await.expect("private nats");
    assert_stream_matches_store(&jetstream::new(client), &config, &store).await;
}
