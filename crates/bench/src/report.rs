//! What a run measured, with the settings it ran under, as a table or as JSON.

use serde::Serialize;

use crate::stats::Latency;
use crate::{BenchOptions, Deployment};

/// One measured figure, beside the baseline it is meant to be read against.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    /// Client concurrency, or the rate asked for, depending on the scenario.
    pub concurrency: usize,
    pub count: u64,
    pub per_second: f64,
    pub latency: Option<Latency>,
    pub errors: u64,
    pub conflicts: u64,
    /// The baseline scenario this figure divides by, and the ratio.
    pub baseline: Option<&'static str>,
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub dealstream_version: &'static str,
    pub postgres_version: String,
    pub synchronous_commit: String,
    pub shared_buffers: String,
    pub cpus: usize,
    pub seconds_per_step: f64,
    pub clients: Vec<usize>,
    pub deals: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: RunSettings,
    pub figures: Vec<Figure>,
}

impl Report {
    pub async fn new(deployment: &Deployment, options: &BenchOptions) -> anyhow::Result<Report> {
        let client = deployment.pool.get().await?;
        let setting = |name: &'static str| {
            let client = &client;
            async move {
                let row = client
                    .query_one("select current_setting($1)", &[&name])
                    .await?;
                anyhow::Ok(row.get::<_, String>(0))
            }
        };
        Ok(Report {
            settings: RunSettings {
                dealstream_version: env!("CARGO_PKG_VERSION"),
                postgres_version: setting("server_version").await?,
                synchronous_commit: setting("synchronous_commit").await?,
                shared_buffers: setting("shared_buffers").await?,
                cpus: std::thread::available_parallelism().map_or(1, usize::from),
                seconds_per_step: options.seconds.as_secs_f64(),
                clients: options.clients.clone(),
                deals: options.deals,
            },
            figures: Vec::new(),
        })
    }

    pub fn figure(&self, scenario: &str, concurrency: usize) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|figure| figure.scenario == scenario && figure.concurrency == concurrency)
    }

    /// Sets each figure's ratio to its baseline at the same concurrency.
    pub fn link_baselines(&mut self) {
        let baselines: Vec<(&'static str, usize, f64)> = self
            .figures
            .iter()
            .map(|figure| (figure.scenario, figure.concurrency, figure.per_second))
            .collect();
        for figure in &mut self.figures {
            let Some(baseline) = figure.baseline else {
                continue;
            };
            figure.ratio = baselines
                .iter()
                .find(|(scenario, concurrency, _)| {
                    *scenario == baseline && *concurrency == figure.concurrency
                })
                .filter(|(_, _, per_second)| *per_second > 0.0)
                .map(|(_, _, per_second)| figure.per_second / per_second);
        }
    }

    pub fn to_table(&self) -> String {
        let settings = &self.settings;
        let mut table = format!(
            "dealstream bench {} | PostgreSQL {} (synchronous_commit={}, shared_buffers={}) | {} cpus | {}s per step\n\n",
            settings.dealstream_version,
            settings.postgres_version,
            settings.synchronous_commit,
            settings.shared_buffers,
            settings.cpus,
            settings.seconds_per_step,
        );
        table.push_str(&format!(
            "{:<18} {:>7} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}  {}\n",
            "scenario",
            "clients",
            "count",
            "per sec",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "errors",
            "confl",
            "vs baseline"
        ));
        for figure in &self.figures {
            let latency = figure.latency.unwrap_or_default();
            let versus = match (figure.baseline, figure.ratio) {
                (Some(baseline), Some(ratio)) => format!("{ratio:.2}x {baseline}"),
                _ => String::new(),
            };
            table.push_str(&format!(
                "{:<18} {:>7} {:>9} {:>11.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6}  {}\n",
                figure.scenario,
                figure.concurrency,
                figure.count,
                figure.per_second,
                latency.p50_ms,
                latency.p95_ms,
                latency.p99_ms,
                latency.max_ms,
                figure.errors,
                figure.conflicts,
                versus
            ));
        }
        table
    }
}
