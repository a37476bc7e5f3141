//! A complete dealstream started in-process on a scratch schema, torn down when the run ends.
//!
//! The API always runs; the relay, the projector and the workflow are started by the scenarios
//! that need them, on a JetStream stream and subject prefix derived from the schema, so that a
//! bench never mixes with a deployment sharing the same NATS server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use commands::{CommandHandler, SystemClock};
use deadpool_postgres::Pool;
use domain::values::parse_owner;
use eventstore::EventStore;
use futures::TryStreamExt;
use platform::{CancellationToken, ConnectionUrl};
use projector::Projection;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Connections of the deployment's pool: enough for 64 clients' reads plus group commit, the
/// projector's batches and the workflow's reactions.
pub const POOL_SIZE: usize = 32;

pub struct Deployment {
    pub schema: String,
    pub database_url: String,
    /// The pool's connection settings (search_path set to the schema), for dedicated
    /// connections such as the relay's LISTEN.
    pub database: tokio_postgres::Config,
    pub pool: Pool,
    pub handler: CommandHandler,
    pub api_address: SocketAddr,
    /// An admin token of this deployment's API.
    pub api_token: String,
    pub nats_url: ConnectionUrl,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    /// `BENCH_<id>`: the events stream. Scratch streams of the scenarios start with it too, so
    /// that `stop` finds and deletes them all.
    pub stream_name: String,
    /// The schema's name: `bench_<id>`, a valid subject token.
    pub subject_prefix: String,
    shutdown: CancellationToken,
    api: JoinHandle<std::io::Result<()>>,
}

/// A relay, projector or workflow running for one scenario.
pub struct Service {
    name: &'static str,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Cancels the service and waits for it to drain. A failure is an error: a scenario whose
    /// relay died measured nothing worth reporting.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(outcome)) => outcome.with_context(|| format!("the bench {} failed", self.name)),
            Ok(Err(error)) => Err(anyhow::anyhow!("the bench {} panicked: {error}", self.name)),
            Err(_) => Err(anyhow::anyhow!("the bench {} did not stop", self.name)),
        }
    }

    /// Whether it stopped on its own, which the scenarios treat as a failure.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Deployment {
    pub async fn start(database_url: &str, nats_url: &str) -> anyhow::Result<Deployment> {
        let id = Uuid::now_v7().simple().to_string();
        let schema = format!("bench_{id}");
        let admin = eventstore::pool_from_url(database_url, 1).context("DATABASE_URL")?;
        admin
            .get()
            .await
            .context("could not connect to DATABASE_URL")?
            .batch_execute(&format!("create schema {schema}"))
            .await
            .context("could not create the bench schema")?;
        let mut database: tokio_postgres::Config = database_url.parse().context("DATABASE_URL")?;
        database.options(format!("-c search_path={schema}"));
        let pool = eventstore::pool_from_config(database.clone(), POOL_SIZE)?;
        eventstore::migrate(&pool).await?;
        projector::migrate(&pool).await?;
        workflow::migrate(&pool).await?;
        let store = EventStore::new(pool.clone());
        let handler = CommandHandler::new(store, Arc::new(SystemClock));
        handler.ensure_default_pipeline().await?;

        let nats_url = ConnectionUrl::parse("NATS_URL", nats_url)?;
        let nats = async_nats::connect(nats_url.expose())
            .await
            .with_context(|| format!("could not connect to NATS at {nats_url} (set NATS_URL)"))?;
        let jetstream = jetstream::new(nats.clone());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let state = api::AppState::new(handler.clone(), parse_owner("unassigned")?);
        let api_token = api::auth::create_token(&pool, "bench", api::auth::Role::Admin, None)
            .await?
            .token;
        let api = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        Ok(Deployment {
            stream_name: format!("BENCH_{}", id.to_uppercase()),
            subject_prefix: schema.clone(),
            schema,
            database_url: database_url.to_owned(),
            database,
            pool,
            handler,
            api_address,
            api_token,
            nats_url,
            nats,
            jetstream,
            shutdown,
            api,
        })
    }

    /// An HTTP client that sends the deployment's admin token with every request.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.api_token))
                .expect("a token is visible ASCII");
        bearer.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        reqwest::Client::builder().default_headers(headers)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_address)
    }

    pub fn store(&self) -> &EventStore {
        self.handler.store()
    }

    /// The relay's configuration on this deployment's stream and prefix, with the defaults the
    /// service runs with.
    pub fn relay_config(&self) -> anyhow::Result<relay::RelayConfig> {
        Ok(relay::RelayConfig::new(
            self.nats_url.clone(),
            self.database.clone(),
            self.stream_name.parse()?,
            self.subject_prefix.parse()?,
        ))
    }

    /// Starts the relay with `config` and waits until it has set up the stream, so that
    /// consumers started next find it.
    pub async fn start_relay(&self, config: relay::RelayConfig) -> anyhow::Result<Service> {
        let stats = config.stats.clone();
        let service = self.spawn("relay", {
            let (client, store) = (self.nats.clone(), self.store().clone());
            move |shutdown| async move {
                relay::run_with_client(config, client, store, shutdown)
                    .await
                    .map_err(anyhow::Error::from)
            }
        });
        let started = tokio::time::Instant::now();
        while stats.resumes() == 0 {
            anyhow::ensure!(!service.is_finished(), "the bench relay stopped on start");
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the bench relay did not set up its stream within 30s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(service)
    }

    /// Starts the pipeline projector with the service's defaults.
    pub fn start_projector(&self) -> Service {
        let config = projector::ProjectorConfig::new(
            self.nats_url.expose(),
            self.stream_name.as_str(),
            self.subject_prefix.as_str(),
        );
        let (client, store) = (self.nats.clone(), self.store().clone());
        self.spawn("projector", move |shutdown| async move {
            projector::run_with_client(config, client, store, &[Projection::Pipeline], shutdown)
                .await
                .map_err(anyhow::Error::from)
        })
    }

    pub(crate) fn spawn<F, Fut>(&self, name: &'static str, run: F) -> Service
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = self.shutdown.child_token();
        let task = tokio::spawn(run(shutdown.clone()));
        Service {
            name,
            shutdown,
            task,
        }
    }

    /// Stops the services, deletes the deployment's streams and drops the scratch schema.
    /// Failures are reported, not returned: the figures are already measured.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(error) = self.api.await {
            tracing::warn!(%error, "bench api task failed");
        }
        let streams: Result<Vec<String>, _> =
            self.jetstream.stream_names().try_collect::<Vec<_>>().await;
        match streams {
            Ok(names) => {
                for name in names
                    .iter()
                    .filter(|name| name.starts_with(&self.stream_name))
                {
                    if let Err(error) = self.jetstream.delete_stream(name).await {
                        tracing::warn!(stream = name, %error, "could not delete a bench stream");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not list the bench streams"),
        }
        self.pool.close();
        let dropped = async {
            let admin = eventstore::pool_from_url(&self.database_url, 1)?;
            admin
                .get()
                .await?
                .batch_execute(&format!("drop schema {} cascade", self.schema))
                .await?;
            anyhow::Ok(())
        };
        if let Err(error) = dropped.await {
            tracing::warn!(
                schema = self.schema,
                error = format!("{error:#}"),
                "could not drop the bench schema"
            );
        }
    }
}
