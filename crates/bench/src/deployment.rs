//! A complete dealstream started in-process on a scratch schema, torn down when the run ends.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use commands::{CommandHandler, SystemClock};
use deadpool_postgres::Pool;
use domain::values::parse_owner;
use eventstore::EventStore;
use platform::CancellationToken;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Connections of the deployment's pool: enough for 64 clients' reads plus group commit.
const POOL_SIZE: usize = 32;

pub struct Deployment {
    pub schema: String,
    pub database_url: String,
    pub pool: Pool,
    pub handler: CommandHandler,
    pub api_address: SocketAddr,
    shutdown: CancellationToken,
    api: JoinHandle<std::io::Result<()>>,
}

impl Deployment {
    pub async fn start(database_url: &str) -> anyhow::Result<Deployment> {
        let schema = format!("bench_{}", Uuid::now_v7().simple());
        let admin = eventstore::pool_from_url(database_url, 1).context("DATABASE_URL")?;
        admin
            .get()
            .await
            .context("could not connect to DATABASE_URL")?
            .batch_execute(&format!("create schema {schema}"))
            .await
            .context("could not create the bench schema")?;
        let mut config: tokio_postgres::Config = database_url.parse().context("DATABASE_URL")?;
        config.options(format!("-c search_path={schema}"));
        let pool = eventstore::pool_from_config(config, POOL_SIZE)?;
        eventstore::migrate(&pool).await?;
        let store = EventStore::new(pool.clone());
        let handler = CommandHandler::new(store, Arc::new(SystemClock));
        handler.ensure_default_pipeline().await?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let state = api::AppState::new(handler.clone(), parse_owner("unassigned")?);
        let api = tokio::spawn(api::serve(listener, state, shutdown.clone()));
        Ok(Deployment {
            schema,
            database_url: database_url.to_owned(),
            pool,
            handler,
            api_address,
            shutdown,
            api,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_address)
    }

    /// Stops the services and drops the scratch schema. Failures are reported, not returned:
    /// the figures are already measured.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(error) = self.api.await {
            tracing::warn!(%error, "bench api task failed");
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
