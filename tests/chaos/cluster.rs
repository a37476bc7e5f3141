//! The servers and processes of one chaos run: a private PostgreSQL cluster, a private
//! nats-server with JetStream, and the four dealstream services, each a process of its own.
//! Everything lives under one run directory in the system's temporary directory; the guards
//! stop what they started and remove that directory when they are dropped, so a failed or
//! panicking run leaves nothing behind (its logs are copied to `target/tmp/chaos-logs` first).
//! The several-machines suite (tests/machines) uses it too, with replicated services and a
//! NATS cluster, so each suite leaves some of it unused.
#![allow(dead_code, reason = "shared by two suites, each using a part")]

use std::fmt;
use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The JetStream stream and subject prefix the services are given, so the checks know them.
pub const NATS_STREAM: &str = "DEALSTREAM_EVENTS";
pub const SUBJECT_PREFIX: &str = "dealstream";
const DATABASE: &str = "dealstream";

/// How long a server or service may take to come up before the run gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service may take to stop on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A port the kernel just handed out on loopback. It is free again once the probe closes, and
/// the server that binds it a moment later is the only one asking for it in practice.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The directory of one run; removed on drop, after its logs were kept if the run failed.
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn create(seed: u64) -> RunDir {
        let path = std::env::temp_dir().join(format!(
            "dealstream-chaos-{}-{seed:016x}",
            std::process::id()
        ));
        fs::create_dir_all(path.join("logs")).expect("create the run directory");
        // PostgreSQL runs as user postgres when the test runs as root; it must reach its data.
        set_mode(&path, 0o755);
        RunDir { path }
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.path.join("logs").join(format!("{name}.log"))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-logs");
            let _ = fs::remove_dir_all(&kept);
            if fs::create_dir_all(&kept).is_ok() {
                for entry in fs::read_dir(self.path.join("logs")).into_iter().flatten() {
                    let Ok(entry) = entry else { continue };
                    let _ = fs::copy(entry.path(), kept.join(entry.file_name()));
                }
                eprintln!("chaos: the services' logs are in {}", kept.display());
            }
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("set permissions");
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Finds a program on PATH or in the extra directories, or stops the run naming what to install.
fn program(name: &str, extra_dirs: &[PathBuf], install: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chaos suite: `{name}` is not on PATH{}; install {install} (`bash \
                 deploy/services.sh` installs it on a fresh Debian or Ubuntu machine)",
                if extra_dirs.is_empty() {
                    String::new()
                } else {
                    " nor under /usr/lib/postgresql/*/bin".to_owned()
                }
            )
        })
}

/// Debian keeps the server programs out of PATH, one directory per major version; newest first.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

fn append_to(log: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open a log file")
}

/// How PostgreSQL is stopped for a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownMode {
    /// Sessions are ended and the server shuts down cleanly.
    Fast,
    /// The server stops without a checkpoint, as a crash would; it recovers from WAL on start.
    Immediate,
}

impl ShutdownMode {
    fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

impl fmt::Display for ShutdownMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A PostgreSQL cluster of the run's own, on a free loopback port, with trust authentication.
pub struct Postgres {
    pg_ctl: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// initdb and pg_ctl refuse to run as root, so a root test runs them as user postgres.
    as_postgres: bool,
}

impl Postgres {
    pub async fn start(run: &RunDir) -> Postgres {
        let bin_dirs = postgres_bin_dirs();
        let install = "PostgreSQL (`apt-get install postgresql`)";
        let initdb = program("initdb", &bin_dirs, install);
        let pg_ctl = program("pg_ctl", &bin_dirs, install);
        let as_postgres = running_as_root();
        let dir = run.path.join("postgres");
        fs::create_dir_all(&dir).expect("create the postgres directory");
        if as_postgres {
            let owner = Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(
                owner.success(),
                "chaos suite: running as root, PostgreSQL needs the system user `postgres` \
                 (install the postgresql package, or run `useradd --system postgres`)"
            );
        }
        let log = run.log("postgres");
        File::create(&log).expect("create the postgres log");
        if as_postgres {
            Command::new("chown")
                .arg("postgres")
                .arg(&log)
                .status()
                .expect("run chown");
        }
        let postgres = Postgres {
            pg_ctl,
            dir,
            log,
            port: free_port(),
            as_postgres,
        };
        let initialised = postgres
            .command(&initdb)
            .arg("-D")
            .arg(postgres.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync")
            .stdout(append_to(&run.log("initdb")))
            .stderr(append_to(&run.log("initdb")))
            .status()
            .expect("run initdb");
        assert!(initialised.success(), "initdb failed, see its log");
        postgres.pg_ctl_async(&["start"]).await;
        postgres.create_database().await;
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    /// `pg_ctl <action>` with the server's options; `-l` keeps the server's output in its log,
    /// away from pg_ctl's own, whose end the caller waits for.
    fn pg_ctl_command(&self, arguments: &[&str]) -> Command {
        let mut command = self.command(&self.pg_ctl);
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60"])
            .args(arguments)
            .arg("-o")
            .arg(format!(
                // fsync off: a process crash (immediate shutdown) loses nothing that was
                // written, only an operating system crash would, and the run is faster for it.
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=400 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .stdout(append_to(&self.log))
            .stderr(append_to(&self.log));
        command
    }

    async fn pg_ctl_async(&self, arguments: &[&str]) {
        let status = tokio::process::Command::from(self.pg_ctl_command(arguments))
            .status()
            .await
            .expect("run pg_ctl");
        assert!(
            status.success(),
            "pg_ctl {arguments:?} failed, see {}",
            self.log.display()
        );
    }

    pub async fn restart(&self, mode: ShutdownMode) {
        self.pg_ctl_async(&["-m", mode.as_str(), "restart"]).await;
    }

    async fn create_database(&self) {
        let maintenance = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let client = connect(&maintenance).await;
        client
            .batch_execute(&format!("create database {DATABASE}"))
            .await
            .expect("create the database");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut command = self.command(&self.pg_ctl);
        command
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = command.status();
    }
}

/// A client of the run's database; the connection task ends with the client.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error}"));
    tokio::spawn(connection);
    client
}

/// A nats-server with JetStream of the run's own, restartable on the same port and store.
pub struct Nats {
    binary: PathBuf,
    store: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// `--name`, `--cluster` and `--routes` of a cluster node; empty for a lone server.
    cluster_args: Vec<String>,
    child: Option<Child>,
}

fn nats_binary() -> PathBuf {
    program(
        "nats-server",
        &[PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")],
        "nats-server (`apt-get install nats-server`)",
    )
}

impl Nats {
    pub async fn start(run: &RunDir) -> Nats {
        let mut nats = Nats {
            binary: nats_binary(),
            store: run.path.join("nats"),
            log: run.log("nats-server"),
            port: free_port(),
            cluster_args: Vec::new(),
            child: None,
        };
        nats.spawn().await;
        nats
    }

    /// `size` servers forming one JetStream cluster on loopback, each with its own store.
    pub async fn start_cluster(run: &RunDir, size: usize) -> Vec<Nats> {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<Nats> = route_ports
            .iter()
            .enumerate()
            .map(|(index, route_port)| Nats {
                binary: nats_binary(),
                store: run.path.join(format!("nats-{index}")),
                log: run.log(&format!("nats-server-{index}")),
                port: free_port(),
                cluster_args: vec![
                    "--name".to_owned(),
                    format!("node-{index}"),
                    "--cluster_name".to_owned(),
                    "dealstream".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{route_port}"),
                    "--routes".to_owned(),
                    routes.clone(),
                ],
                child: None,
            })
            .collect();
        for node in &mut nodes {
            node.spawn().await;
        }
        nodes
    }

    /// `kill -9`: the node loses whatever it had not written; the others carry on.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its port and store.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(append_to(&self.log))
            .stderr(append_to(&self.log))
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.binary.display()));
        self.child = Some(child);
        wait_for_port(self.port, "nats-server").await;
    }

    /// Stops the server as an operator's restart does (SIGTERM, so JetStream flushes what it
    /// acknowledged) and starts it again on the same port and store.
    pub async fn restart(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, "nats-server").await;
        }
        self.spawn().await;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal with the system's `kill`, which saves a dependency on libc bindings.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

/// SIGTERM, then SIGKILL if the process has not ended within [`STOP_TIMEOUT`].
async fn terminate(mut child: Child, what: &str) -> Option<ExitStatus> {
    signal(child.id(), "TERM");
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            eprintln!("chaos: {what} ignored SIGTERM for {STOP_TIMEOUT:?}, killing it");
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The four services, each its own `dealstream` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Api,
    Relay,
    Projector,
    Workflow,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Relay, Role::Projector, Role::Workflow];

    pub fn subcommand(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Relay => "relay",
            Role::Projector => "projector",
            Role::Workflow => "workflow",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.subcommand())
    }
}

/// The debug `dealstream` binary cargo built beside this test (`target/debug/deps/chaos-*`).
pub fn dealstream_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let binary = test
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("dealstream"))
        .expect("the test lives in target/<profile>/deps");
    assert!(
        binary.is_file(),
        "chaos suite: {} is missing; build it first with `cargo build -p dealstream` (`cargo \
         test --workspace --all-targets` builds it before running the tests)",
        binary.display()
    );
    binary
}

struct Process {
    role: Role,
    /// 0 for the first instance of its role.
    instance: usize,
    /// What this instance gets on top of the services' environment (its own ports).
    environment: Vec<(&'static str, String)>,
    child: Option<Child>,
}

/// The service processes, started with one environment, and what happened to them.
pub struct Services {
    binary: PathBuf,
    environment: Vec<(&'static str, String)>,
    log_dir: PathBuf,
    processes: Vec<Process>,
    /// Processes that ended without being asked to, and how; the supervisor restarted them.
    pub unexpected_exits: Vec<String>,
}

impl Services {
    pub fn new(run: &RunDir, environment: Vec<(&'static str, String)>) -> Services {
        Services::replicated(run, environment, 1, |_, _| Vec::new())
    }

    /// `instances` processes of every role; `instance_environment` gives each its own settings
    /// (ports) on top of the shared `environment`.
    pub fn replicated(
        run: &RunDir,
        environment: Vec<(&'static str, String)>,
        instances: usize,
        instance_environment: impl Fn(Role, usize) -> Vec<(&'static str, String)>,
    ) -> Services {
        Services {
            binary: dealstream_binary(),
            environment,
            log_dir: run.path.join("logs"),
            processes: Role::ALL
                .into_iter()
                .flat_map(|role| (0..instances).map(move |instance| (role, instance)))
                .map(|(role, instance)| Process {
                    role,
                    instance,
                    environment: instance_environment(role, instance),
                    child: None,
                })
                .collect(),
            unexpected_exits: Vec::new(),
        }
    }

    /// Runs a one-off subcommand (such as a rebuild) with the services' environment.
    pub fn one_off(&self, arguments: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command.args(arguments).stdin(Stdio::null());
        self.apply_environment(command.as_std_mut());
        command
    }

    fn apply_environment(&self, command: &mut Command) {
        for name in [
            "DEALSTREAM_NATS_STREAM",
            "DEALSTREAM_SUBJECT_PREFIX",
            "DEALSTREAM_CONFIG",
            "DEALSTREAM_HTTP_ADDR",
            "DEALSTREAM_ADMIN_ADDR",
        ] {
            command.env_remove(name);
        }
        command.envs(self.environment.iter().map(|(name, value)| (name, value)));
    }

    fn process(&mut self, role: Role, instance: usize) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|process| process.role == role && process.instance == instance)
            .expect("every role has a process")
    }

    pub fn start(&mut self, role: Role) {
        self.start_instance(role, 0);
    }

    pub fn start_instance(&mut self, role: Role, instance: usize) {
        let name = match instance {
            0 => role.to_string(),
            _ => format!("{role}-{instance}"),
        };
        let log = self.log_dir.join(format!("{name}.log"));
        let mut command = Command::new(&self.binary);
        command
            .arg(role.subcommand())
            .stdin(Stdio::null())
            .stdout(append_to(&log))
            .stderr(append_to(&log));
        self.apply_environment(&mut command);
        let process = self.process(role, instance);
        command.envs(
            process
                .environment
                .iter()
                .map(|(name, value)| (name, value)),
        );
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("start dealstream {name}: {error}"));
        process.child = Some(child);
    }

    pub fn start_all(&mut self) {
        let all: Vec<(Role, usize)> = self
            .processes
            .iter()
            .map(|process| (process.role, process.instance))
            .collect();
        for (role, instance) in all {
            self.start_instance(role, instance);
        }
    }

    pub fn pid(&mut self, role: Role) -> Option<u32> {
        self.process(role, 0).child.as_ref().map(Child::id)
    }

    /// `kill -9`: the process gets no chance to finish anything. It stays down until started.
    pub fn kill(&mut self, role: Role) {
        self.kill_instance(role, 0);
    }

    pub fn kill_instance(&mut self, role: Role, instance: usize) {
        if let Some(mut child) = self.process(role, instance).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts every process that ended on its own since the last look, as a process
    /// supervisor (systemd's `Restart=always`) would, and notes how it ended.
    pub fn restart_exited(&mut self) {
        let mut ended = Vec::new();
        for process in &mut self.processes {
            let Some(child) = process.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                process.child = None;
                ended.push((process.role, process.instance, status));
            }
        }
        for (role, instance, status) in ended {
            self.unexpected_exits
                .push(format!("{role} {instance} exited ({status})"));
            self.start_instance(role, instance);
        }
    }

    /// SIGTERM to every process, then waits for each; true when all of them ended by themselves
    /// and successfully.
    pub async fn stop_all(&mut self) -> bool {
        let mut clean = true;
        for process in &mut self.processes {
            if let Some(child) = process.child.take() {
                let status = terminate(child, process.role.subcommand()).await;
                clean &= status.is_some_and(|status| status.success());
            }
        }
        clean
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
