//! The `dealstream` binary: reads the settings, initialises tracing and metrics, wires the
//! adapters and runs the chosen services until they end or a shutdown signal arrives. Every
//! subcommand's logic lives in a library crate; this file only connects them and reports how
//! they ended.

mod admin;
mod backtest;
mod demo;
mod forecast;
mod import;
mod progress;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use commands::{CommandHandler, SystemClock};
use eventstore::EventStore;
use metrics_exporter_prometheus::PrometheusHandle;
use platform::{CancellationToken, Settings};
use projector::Projection;
use tokio::task::JoinSet;

#[derive(Parser)]
#[command(
    name = "dealstream",
    version,
    about = "Event-sourced opportunity management"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Applies pending database migrations and exits.
    Migrate,
    /// Serves the HTTP API.
    Api,
    /// Publishes committed events to JetStream, in order, exactly once.
    Relay,
    /// Keeps read models up to date from JetStream (all of them when none is named).
    Projector {
        /// Projections to run: pipeline, forecast.
        names: Vec<String>,
    },
    /// Runs the follow-up rules, timers, reminders and lead routing.
    Workflow,
    /// Runs every service in one process, for a single node.
    Run,
    /// Writes a realistic sample history of past months through the import path and prints a
    /// summary.
    Demo(demo::DemoArgs),
    /// Loads history exported from another system, with its original dates (docs/import.md).
    Import(import::ImportArgs),
    /// Prints the forecast table, now, as of an earlier instant or valid at one
    /// (docs/forecasting.md).
    Forecast(forecast::ForecastArgs),
    /// Prints, for every past period, the forecast made before it with the stage defaults and
    /// with historical win rates, beside what was won (docs/forecasting.md).
    Backtest(backtest::BacktestArgs),
    /// Read model maintenance.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// The event stream on NATS.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The HTTP API's bearer tokens (docs/security.md).
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// Measures throughput and latency beside baselines taken in the same run, in a scratch
    /// schema of the configured database.
    Bench(bench::BenchOptions),
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Rebuilds a projection from the event store into fresh tables, then swaps them in while
    /// the API keeps serving the old ones.
    Rebuild {
        /// pipeline or forecast.
        name: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Follows the JetStream stream and prints envelopes as JSON lines.
    Tail {
        /// Start at this store position instead of with new events only.
        #[arg(long)]
        from_position: Option<i64>,
        /// A subject filter, e.g. `opportunity.>` or `*.*.StageChanged`.
        #[arg(long)]
        subject: Option<String>,
    },
}

/// Database connections each process keeps: group commit, concurrent reads, the workflow's
/// reactions and the projectors' batches.
const POOL_SIZE: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    platform::telemetry::init(settings.log_format);
    let metrics = admin::install_recorder()?;
    let shutdown = platform::shutdown_signal();
    let result = match cli.command {
        Command::Migrate => migrate(&settings).await,
        Command::Api => services(&settings, &metrics, &shutdown, &[Service::Api]).await,
        Command::Relay => services(&settings, &metrics, &shutdown, &[Service::Relay]).await,
        Command::Projector { names } => {
            let projections = parse_projections(&names)?;
            services(
                &settings,
                &metrics,
                &shutdown,
                &[Service::Projector(projections)],
            )
            .await
        }
        Command::Workflow => services(&settings, &metrics, &shutdown, &[Service::Workflow]).await,
        Command::Run => {
            let all = [
                Service::Api,
                Service::Relay,
                Service::Projector(Projection::ALL.to_vec()),
                Service::Workflow,
            ];
            services(&settings, &metrics, &shutdown, &all).await
        }
        Command::Demo(arguments) => {
            let node = open(&settings).await?;
            let importer = import::Importer {
                handler: &node.handler,
                default_owner: rules(&settings)?.routing.default_owner,
            };
            demo::run(&importer, &arguments).await?;
            // The API wants a token; the demo's reader gets a manager's to try it with.
            let token =
                tokens::create(&node.store, "demo-manager", api::auth::Role::Manager, None).await?;
            println!("\nA manager token to try the API with (id {}):", token.id);
            println!("{}", token.token);
            Ok(())
        }
        Command::Import(arguments) => {
            let node = open(&settings).await?;
            let importer = import::Importer {
                handler: &node.handler,
                default_owner: rules(&settings)?.routing.default_owner,
            };
            import::run(&importer, &arguments).await
        }
        Command::Forecast(arguments) => {
            let node = open(&settings).await?;
            let calibration = calibration(&settings)?;
            forecast::run(&node.store, &arguments, calibration, node.handler.now()).await
        }
        Command::Backtest(arguments) => {
            let node = open(&settings).await?;
            let calibration = calibration(&settings)?;
            backtest::run(&node.store, &arguments, calibration, node.handler.now()).await
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name },
        } => rebuild(&settings, &name, &shutdown).await,
        Command::Events {
            command:
                EventsCommand::Tail {
                    from_position,
                    subject,
                },
        } => tail(&settings, from_position, subject, &shutdown).await,
        Command::Bench(options) => run_bench(&settings, &options).await,
        Command::Tokens { command } => {
            // Tokens are the owner's to create and revoke: the services may only read them.
            let node = open(&owner_settings(&settings)).await?;
            tokens::run(&node.store, &command).await
        }
    };
    if let Err(error) = &result {
        tracing::error!(
            error = format!("{error:#}"),
            "dealstream stopped with an error"
        );
    }
    result
}

/// What every service of one process shares.
struct Node {
    store: EventStore,
    handler: CommandHandler,
}

/// The settings with the owner's connection (`DEALSTREAM_MIGRATION_URL`) as `DATABASE_URL`.
fn owner_settings(settings: &Settings) -> Settings {
    Settings {
        database_url: settings
            .migration_url
            .clone()
            .unwrap_or_else(|| settings.database_url.clone()),
        ..settings.clone()
    }
}

/// Applies every migration as the owner. With `DEALSTREAM_MIGRATION_URL` set, the user of
/// `DATABASE_URL` then becomes (or is brought up to date as) the services' role, which may only
/// read and append events (docs/security.md).
async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let owner = open(&owner_settings(settings)).await?;
    let Some(migration_url) = &settings.migration_url else {
        tracing::info!("database migrated");
        return Ok(());
    };
    let service: tokio_postgres::Config =
        settings.database_url.expose().parse().with_context(|| {
            format!("invalid DATABASE_URL {}", settings.database_url.redacted())
        })?;
    let owner_config: tokio_postgres::Config =
        migration_url.expose().parse().with_context(|| {
            format!(
                "invalid DEALSTREAM_MIGRATION_URL {}",
                migration_url.redacted()
            )
        })?;
    let role = service
        .get_user()
        .context("DATABASE_URL names no user for the services' role")?;
    if owner_config.get_user() == Some(role) {
        tracing::warn!(
            role,
            "DATABASE_URL and DEALSTREAM_MIGRATION_URL name the same user: the services keep \
             the owner's privileges"
        );
        return Ok(());
    }
    let password = service
        .get_password()
        .map(|bytes| {
            std::str::from_utf8(bytes).context("the password in DATABASE_URL is not UTF-8")
        })
        .transpose()?;
    eventstore::grant_service_role(owner.store.pool(), role, password)
        .await
        .with_context(|| format!("could not set up the services' role {role:?}"))?;
    tracing::info!(
        role,
        "database migrated; the services' role may only read and append events"
    );
    Ok(())
}

/// Connects to PostgreSQL, applies every crate's migrations and defines the default pipeline.
async fn open(settings: &Settings) -> anyhow::Result<Node> {
    let redacted = settings.database_url.redacted();
    let pool = eventstore::pool_from_url(settings.database_url.expose(), POOL_SIZE)
        .with_context(|| format!("invalid DATABASE_URL {redacted}"))?;
    eventstore::migrate(&pool)
        .await
        .with_context(|| format!("could not migrate the event store at {redacted}"))?;
    projector::migrate(&pool)
        .await
        .context("could not migrate the read models")?;
    workflow::migrate(&pool)
        .await
        .context("could not migrate the workflow tables")?;
    let store = EventStore::new(pool);
    let handler = CommandHandler::new(store.clone(), Arc::new(SystemClock));
    handler
        .ensure_default_pipeline()
        .await
        .context("could not define the default pipeline")?;
    Ok(Node { store, handler })
}

/// The rules file (`DEALSTREAM_CONFIG`), or the built-in rules without one: the workflow's rules,
/// the owner of a deal converted from a lead nobody was routed to (`routing.default_owner`) and
/// the forecast's `prior_weight`.
fn rules(settings: &Settings) -> anyhow::Result<workflow::WorkflowConfig> {
    Ok(workflow::load_config(settings.config_path.as_deref())?)
}

/// How historical win rates are computed, from the rules file's `[forecast]` section.
fn calibration(settings: &Settings) -> anyhow::Result<projector::analytics::Calibration> {
    Ok(projector::analytics::Calibration {
        prior_weight: rules(settings)?.prior_weight,
        ..Default::default()
    })
}

/// Keeps the table of handled command ids at its retention, hourly. Every API instance does it:
/// deleting the same old rows twice is harmless, and a failure only delays the next pass.
async fn forget_old_commands(store: EventStore, retention_days: u32, shutdown: CancellationToken) {
    const PASS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
    let retention = std::time::Duration::from_secs(u64::from(retention_days) * 24 * 3600);
    while !shutdown.is_cancelled() {
        match store.prune_commands(retention).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, retention_days, "forgot old command ids"),
            Err(error) => tracing::warn!(
                error = %platform::error_chain(&error),
                "forgetting old command ids failed; trying again later"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(PASS_INTERVAL) => {}
        }
    }
}

fn parse_projections(names: &[String]) -> anyhow::Result<Vec<Projection>> {
    if names.is_empty() {
        return Ok(Projection::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| Projection::parse(name).map_err(anyhow::Error::from))
        .collect()
}

enum Service {
    Api,
    Relay,
    Projector(Vec<Projection>),
    Workflow,
}

/// Runs the services side by side until shutdown. A service that stops on its own stops the
/// others too: a node that silently lost its relay would accept commands nobody ever sees.
async fn services(
    settings: &Settings,
    metrics: &PrometheusHandle,
    shutdown: &CancellationToken,
    wanted: &[Service],
) -> anyhow::Result<()> {
    // Read once, and only where it is used, so that a relay or a projector starts whatever the
    // rules file holds.
    let rules = wanted
        .iter()
        .any(|service| matches!(service, Service::Api | Service::Workflow))
        .then(|| rules(settings))
        .transpose()?
        .unwrap_or_default();
    let node = open(settings).await?;
    let nats = relay::connect(&settings.nats_url)
        .await
        .context("NATS_URL")?;
    let mut checks = common_checks(&node, &nats);
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let mut names = HashMap::new();
    // The relay stops last, so that events appended by requests and reactions still finishing
    // are published before the process exits (STYLE: stop accepting work, finish in-flight
    // work, then drain the relay).
    let relay_stop = if wanted
        .iter()
        .all(|service| matches!(service, Service::Relay))
    {
        shutdown.clone()
    } else {
        CancellationToken::new()
    };
    for service in wanted {
        let stop = match service {
            Service::Relay => relay_stop.clone(),
            _ => shutdown.clone(),
        };
        let name = match service {
            Service::Api => "api",
            Service::Relay => "relay",
            Service::Projector(_) => "projector",
            Service::Workflow => "workflow",
        };
        let handle = match service {
            Service::Api => {
                tokio::spawn(forget_old_commands(
                    node.store.clone(),
                    settings.command_retention_days,
                    shutdown.clone(),
                ));
                let listener = tokio::net::TcpListener::bind(settings.http_addr)
                    .await
                    .with_context(|| format!("could not listen on {}", settings.http_addr))?;
                let client = nats.clone();
                let render = metrics.clone();
                let state =
                    api::AppState::new(node.handler.clone(), rules.routing.default_owner.clone())
                        .with_request_timeout(settings.http_request_timeout)
                        .with_readiness_check(api::ReadinessCheck {
                            name: "nats",
                            probe: Arc::new(move || {
                                let state = relay::nats_state(&client);
                                Box::pin(async move {
                                    if state.is_connected() {
                                        Ok(())
                                    } else {
                                        Err("not connected".to_owned())
                                    }
                                })
                            }),
                        })
                        .with_metrics(Arc::new(move || render.render()))
                        .with_prior_weight(rules.prior_weight);
                let state = match settings.rate_limit {
                    Some(per_second) => state.with_rate_limit(per_second),
                    None => state,
                };
                let state = if settings.authentication {
                    state
                } else {
                    state.with_authentication_off()
                };
                tasks.spawn(async move {
                    let with_metrics = |router: axum::Router| {
                        router.route_layer(axum::middleware::from_fn(admin::track_http))
                    };
                    let served = api::serve_wrapped(listener, state, with_metrics, stop).await;
                    ("api", served.context("http server failed"))
                })
            }
            Service::Relay => {
                let config = relay::RelayConfig::from_settings(settings)?;
                checks.push(relay_check(config.stats.clone(), node.store.clone()));
                let (client, store) = (nats.clone(), node.store.clone());
                tasks.spawn(async move {
                    let relayed = relay::run_with_client(config, client, store, stop).await;
                    ("relay", relayed.map_err(anyhow::Error::from))
                })
            }
            Service::Projector(projections) => {
                let config = projector::ProjectorConfig::new(
                    settings.nats_url.expose(),
                    settings.nats_stream.as_str(),
                    settings.subject_prefix.as_str(),
                );
                for projection in projections {
                    checks.push(consumer_check(
                        projection.name(),
                        &nats,
                        settings,
                        config.durable_name(*projection),
                    ));
                }
                let (projections, store) = (projections.clone(), node.store.clone());
                let client = nats.clone();
                tasks.spawn(async move {
                    let projected =
                        projector::run_with_client(config, client, store, &projections, stop).await;
                    ("projector", projected.map_err(anyhow::Error::from))
                })
            }
            Service::Workflow => {
                let config = rules.clone();
                let options = workflow::ServiceOptions::from_settings(settings);
                checks.push(consumer_check(
                    "workflow",
                    &nats,
                    settings,
                    options.durable_name(),
                ));
                let (handler, client) = (node.handler.clone(), nats.clone());
                tasks.spawn(async move {
                    let clock = Arc::new(SystemClock);
                    let worked = workflow::run(config, handler, client, options, clock, stop).await;
                    ("workflow", worked.map_err(anyhow::Error::from))
                })
            }
        };
        names.insert(handle.id(), name);
    }
    // Stopped last, so probes keep answering while the services drain.
    let admin_stop = CancellationToken::new();
    let _stop_admin = admin_stop.clone().drop_guard();
    let admin_server = match settings.admin_addr {
        Some(address) => {
            Some(admin::serve(address, checks, metrics.clone(), admin_stop.clone()).await?)
        }
        None => None,
    };
    let mut failures = Vec::new();
    while let Some(finished) = tasks.join_next_with_id().await {
        let (name, outcome) = match finished {
            Ok((_, finished)) => finished,
            Err(error) => {
                let name = names.get(&error.id()).copied().unwrap_or("a service");
                (name, Err(anyhow::anyhow!("{name} panicked: {error}")))
            }
        };
        if !shutdown.is_cancelled() {
            shutdown.cancel();
            if outcome.is_ok() {
                failures.push(format!("{name} stopped without being asked to"));
            }
        }
        match outcome {
            Ok(()) => tracing::info!(service = name, "stopped"),
            Err(error) => failures.push(format!("{name}: {error:#}")),
        }
        names.retain(|_, running| *running != name);
        if names.values().all(|running| *running == "relay") {
            relay_stop.cancel();
        }
    }
    admin_stop.cancel();
    if let Some(server) = admin_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("admin: {error:#}")),
            Err(error) => failures.push(format!("admin panicked: {error}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

/// What every process's `/readyz` checks: the database and the NATS connection.
fn common_checks(node: &Node, nats: &relay::NatsClient) -> Vec<admin::Check> {
    let pool = node.store.pool().clone();
    let client = nats.clone();
    vec![
        admin::Check::new("database", move || {
            let pool = pool.clone();
            async move {
                let answered = match pool.get().await {
                    Ok(connection) => connection.simple_query("select 1").await.map(drop),
                    Err(error) => return admin::Outcome::failed(error.to_string()),
                };
                match answered {
                    Ok(()) => admin::Outcome::ok(serde_json::json!("ok")),
                    Err(error) => admin::Outcome::failed(error.to_string()),
                }
            }
        }),
        admin::Check::new("nats", move || {
            let state = relay::nats_state(&client);
            async move {
                if state.is_connected() {
                    admin::Outcome::ok(serde_json::json!("ok"))
                } else {
                    admin::Outcome::failed("not connected")
                }
            }
        }),
    ]
}

/// The relay's entry of `/readyz`: whether it is the active publisher and, when it is, how far
/// behind the store it is. A standby is ready: it is waiting on purpose.
fn relay_check(stats: relay::RelayStats, store: EventStore) -> admin::Check {
    admin::Check::new("relay", move || {
        let (stats, store) = (stats.clone(), store.clone());
        async move {
            if !stats.is_active() {
                return admin::Outcome::ok(serde_json::json!({ "active": false }));
            }
            let published = stats.last_published_position();
            let lag = store
                .head_position()
                .await
                .map(|head| serde_json::json!((head - published).max(0)))
                .unwrap_or_else(|error| serde_json::json!(error.to_string()));
            admin::Outcome::ok(serde_json::json!({
                "active": true,
                "last_published_position": published,
                "lag_positions": lag,
            }))
        }
    })
}

/// A durable consumer's entry of `/readyz`: the events it has not acknowledged yet. A lag is
/// reported, not refused: a projector catching up after a restart is still the one to run.
fn consumer_check(
    name: &'static str,
    nats: &relay::NatsClient,
    settings: &Settings,
    durable: String,
) -> admin::Check {
    let client = nats.clone();
    let stream = settings.nats_stream.as_str().to_owned();
    admin::Check::new(name, move || {
        let (client, stream, durable) = (client.clone(), stream.clone(), durable.clone());
        async move {
            let lag = relay::consumer_lag(&client, &stream, &durable)
                .await
                .map(|lag| serde_json::json!(lag))
                .unwrap_or_else(|error| serde_json::json!(error.to_string()));
            admin::Outcome::ok(serde_json::json!({ "consumer": durable, "lag_events": lag }))
        }
    })
}

async fn rebuild(
    settings: &Settings,
    name: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let projection = Projection::parse(name)?;
    let node = open(settings).await?;
    let options = projector::RebuildOptions::default();
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = progress::rebuild_reporter(on_terminal);
    let report =
        projector::rebuild(projection, &node.store, &options, shutdown, &mut progress).await?;
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "rebuilt {}: {} events in {seconds:.1}s ({:.0} events/s), live from position {}",
        projection.name(),
        report.events_applied,
        report.events_applied as f64 / seconds.max(f64::EPSILON),
        report.position
    );
    Ok(())
}

async fn tail(
    settings: &Settings,
    from_position: Option<i64>,
    subject: Option<String>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = relay::connect(&settings.nats_url).await?;
    let mut options = relay::TailOptions::new(
        settings.nats_stream.clone(),
        settings.subject_prefix.clone(),
    );
    options.from_position = from_position;
    options.subject = subject;
    let mut stdout = tokio::io::stdout();
    relay::tail(client, options, &mut stdout, shutdown.clone()).await?;
    Ok(())
}

async fn run_bench(settings: &Settings, options: &bench::BenchOptions) -> anyhow::Result<()> {
    let report = bench::run(
        settings.database_url.expose(),
        settings.nats_url.expose(),
        options,
    )
    .await?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
