//! What the browser test runs against: a `dealstream run` process with the demo history, in a
//! database of its own on the shared PostgreSQL and a JetStream stream and subject prefix of its
//! own on the shared NATS server, and a chromedriver on a free loopback port. [`Node::remove`]
//! and [`Driver`]'s drop take all of it away again.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a process may take to come up, or a read model to catch up, before the run gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/dealstream";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// A port the kernel just handed out on loopback; free again once the probe closes.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The debug `dealstream` binary cargo built beside this test (`target/debug/deps/browser-*`).
fn dealstream_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let binary = test
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("dealstream"))
        .expect("the test lives in target/<profile>/deps");
    assert!(
        binary.is_file(),
        "browser test: {} is missing; build it first with `cargo build -p dealstream`",
        binary.display()
    );
    binary
}

/// The same URL naming another database.
fn with_database(url: &str, database: &str) -> String {
    let (location, query) = match url.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (url, None),
    };
    let (server, _) = location
        .rsplit_once('/')
        .expect("DATABASE_URL ends in /<database>");
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

pub struct Node {
    pub base: String,
    pub database_url: String,
    admin_url: String,
    database: String,
    nats_url: String,
    stream: String,
    process: Child,
    pub http: reqwest::Client,
    /// A viewer token of the actor the node was started for.
    pub token: String,
}

impl Node {
    /// Writes `months` of demo history into a new database, makes a viewer token for `actor`
    /// and starts every service on it, with authentication on.
    pub async fn start(months: u32, actor: &str) -> Node {
        let tag = format!(
            "{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .subsec_nanos()
        );
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let database = format!("browser_{tag}");
        let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL (DATABASE_URL)");
        tokio::spawn(connection);
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create the test's database");
        let database_url = with_database(&admin_url, &database);
        let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned());
        let stream = format!("BROWSER_{tag}");
        let port = free_port();
        let environment = [
            ("DATABASE_URL", database_url.clone()),
            ("NATS_URL", nats_url.clone()),
            ("DEALSTREAM_NATS_STREAM", stream.clone()),
            ("DEALSTREAM_SUBJECT_PREFIX", format!("browser{tag}")),
            ("DEALSTREAM_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ];
        let binary = dealstream_binary();
        let one_off = |arguments: &[&str]| {
            let output = Command::new(&binary)
                .args(arguments)
                .envs(environment.iter().map(|(name, value)| (name, value)))
                .env_remove("DEALSTREAM_CONFIG")
                .stdin(Stdio::null())
                .output()
                .expect("run dealstream");
            assert!(
                output.status.success(),
                "dealstream {arguments:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("UTF-8 output")
        };
        one_off(&["migrate"]);
        one_off(&["demo", "--months", &months.to_string()]);
        // A viewer's token, as a person would paste it into the page; the new token is alone on
        // the last line.
        let token = one_off(&["tokens", "create", "--actor", actor, "--role", "viewer"])
            .lines()
            .last()
            .expect("the new token")
            .trim()
            .to_owned();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("an HTTP client");
        let process = Command::new(&binary)
            .arg("run")
            .envs(environment.iter().map(|(name, value)| (name, value)))
            .env_remove("DEALSTREAM_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dealstream run");
        let node = Node {
            base: format!("http://127.0.0.1:{port}"),
            database_url,
            admin_url,
            database,
            nats_url,
            stream,
            process,
            http,
            token,
        };
        node.wait_until_quiet().await;
        node
    }

    /// Waits until the node is quiet: the API answers, both read models have applied every
    /// event, no timer is past due, and that stayed so over a few polls (the workflow reacts to
    /// the recent part of the demo at start-up, and the page and the test's own queries must see
    /// the same state).
    async fn wait_until_quiet(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = None;
        let mut stable_polls = 0;
        while stable_polls < 3 {
            let progress = self.progress().await;
            let api_up = self
                .http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success());
            if api_up && progress.is_quiet() && last.as_ref() == Some(&progress) {
                stable_polls += 1;
            } else {
                stable_polls = 0;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not become quiet within {START_TIMEOUT:?}: {progress:?}"
            );
            last = Some(progress);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn progress(&self) -> Progress {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test's database");
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT coalesce((SELECT max(position) FROM events), 0), \
                 (SELECT count(*) FROM workflow_timers WHERE fired_at IS NULL AND due_at <= now())",
                &[],
            )
            .await
            .expect("read the head and the timers");
        // The read models' table appears with the projector's first batch.
        let checkpoints = client
            .query(
                "SELECT projection, position FROM projection_checkpoints ORDER BY projection",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            .unwrap_or_default();
        Progress {
            head: row.get(0),
            timers_past_due: row.get(1),
            checkpoints,
        }
    }

    /// GETs an API path and returns its JSON answer; anything but 200 fails the test.
    pub async fn get(&self, path_and_query: &str) -> Value {
        let answer = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path_and_query}: {error}"));
        assert!(
            answer.status().is_success(),
            "GET {path_and_query} answered {}",
            answer.status()
        );
        answer.json().await.expect("a JSON answer")
    }

    /// Stops the node and removes its database and stream.
    pub async fn remove(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if let Ok(nats) = async_nats::connect(&self.nats_url).await {
            let jetstream = async_nats::jetstream::new(nats);
            // The events stream, and the workflow's notifications stream named after it.
            for stream in [
                self.stream.clone(),
                format!("{}_NOTIFICATIONS", self.stream),
            ] {
                let _ = jetstream.delete_stream(&stream).await;
            }
        }
        if let Ok((admin, connection)) =
            tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.database
                ))
                .await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Progress {
    head: i64,
    timers_past_due: i64,
    checkpoints: Vec<(String, i64)>,
}

impl Progress {
    fn is_quiet(&self) -> bool {
        let applied = |name: &str| {
            self.checkpoints
                .iter()
                .any(|(projection, position)| projection == name && *position == self.head)
        };
        self.head > 0 && applied("pipeline") && applied("forecast") && self.timers_past_due == 0
    }
}

/// Debian's chromedriver on a free loopback port, in a process group of its own so that the
/// browsers it starts go with it.
pub struct Driver {
    pub url: String,
    process: Child,
}

impl Driver {
    pub async fn start() -> Driver {
        let program = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|path| Path::new(path).is_file())
            .expect(
                "browser test: chromedriver is missing; `apt-get install chromium \
                 chromium-driver` (deploy/test.sh installs them)",
            );
        let port = free_port();
        let process = Command::new(program)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            url: format!("http://127.0.0.1:{port}"),
            process,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let http = reqwest::Client::new();
        loop {
            let status = http.get(format!("{}/status", driver.url)).send().await;
            if let Ok(status) = status
                && let Ok(body) = status.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it started, even after a failed test
        // that never closed its session.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.process.id())])
            .status();
        let _ = self.process.wait();
    }
}
