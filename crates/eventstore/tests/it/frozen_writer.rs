//! A writer that freezes while it holds the append lock (a stopped process, a cut network) must
//! hold the other writers up for a few seconds at most. The frozen writer is simulated with a TCP
//! proxy between its pool and PostgreSQL that stops forwarding on request, which is what the
//! server sees of a process under SIGSTOP.

use std::time::{Duration, Instant};

use eventstore::{AppendError, EventStore, ExpectedVersion, pool_from_config};
use testkit::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::config::Host;

use crate::{AppendLock, events, new_stream, single};

/// Forwards connections to PostgreSQL until paused; while paused, bytes in either direction are
/// held back, as if the client process had stopped.
struct FreezableProxy {
    port: u16,
    paused: watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(target: (String, u16)) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (paused, _) = watch::channel(false);
        let pause_signal = paused.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, pause_signal.subscribe()));
                tokio::spawn(forward(server_read, client_write, pause_signal.subscribe()));
            }
        });
        FreezableProxy { port, paused }
    }

    fn freeze(&self) {
        self.paused.send_replace(true);
    }

    fn thaw(&self) {
        self.paused.send_replace(false);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if paused.wait_for(|paused| !paused).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

fn server_address(database: &TestDb) -> (String, u16) {
    let host = match database.config().get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = database
        .config()
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432);
    (host, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_frozen_inside_its_append_holds_the_others_up_for_seconds_only() {
    let database = TestDb::new().await;
    let proxy = FreezableProxy::start(server_address(&database)).await;
    // `Config::host` adds a host rather than replacing one, so the proxied configuration is
    // built afresh.
    let base = database.config();
    let mut frozen_config = tokio_postgres::Config::new();
    frozen_config.host("127.0.0.1").port(proxy.port);
    if let Some(user) = base.get_user() {
        frozen_config.user(user);
    }
    if let Some(database_name) = base.get_dbname() {
        frozen_config.dbname(database_name);
    }
    if let Some(options) = base.get_options() {
        frozen_config.options(options);
    }
    let frozen_store = EventStore::new(pool_from_config(frozen_config, 1).expect("pool"));
    let other_store = database.store();

    // The frozen writer's connection exists before the lock is contended.
    frozen_store
        .append(single(&new_stream("lead"), ExpectedVersion::Any, events(1)))
        .await
        .expect("warm-up append");

    // Its next append waits for the lock; once it is frozen, the lock is handed to it, so its
    // session holds the lock while its process (here: the proxy) no longer answers.
    let lock = AppendLock::take(&database).await;
    let frozen_stream = new_stream("lead");
    let frozen_append = tokio::spawn({
        let store = frozen_store.clone();
        let stream = frozen_stream.clone();
        async move {
            store
                .append(single(&stream, ExpectedVersion::Any, events(1)))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.freeze();
    lock.release().await;

    let started = Instant::now();
    let other_stream = new_stream("lead");
    let mut unavailable_answers = 0;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(15),
            other_store.append(single(&other_stream, ExpectedVersion::Any, events(1))),
        )
        .await
        .expect("an append behind a frozen writer must answer within seconds, not hang");
        match attempt {
            Ok(_) => break,
            Err(AppendError::Unavailable(_)) => unavailable_answers += 1,
            Err(error) => panic!("expected success or Unavailable, got {error:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the frozen writer's transaction was never ended by the server"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "other writers waited {:?} behind the frozen one",
        started.elapsed()
    );
    assert!(
        unavailable_answers <= 2,
        "{unavailable_answers} Unavailable answers before the frozen session was ended"
    );

    proxy.thaw();
    match frozen_append.await.expect("frozen append task") {
        Err(AppendError::Unavailable(_)) => {}
        other => panic!("the frozen writer's append must fail as Unavailable, got {other:?}"),
    }
    assert!(
        other_store
            .read_stream(&frozen_stream)
            .await
            .expect("read")
            .is_empty(),
        "the frozen writer's transaction must have been rolled back"
    );
}
