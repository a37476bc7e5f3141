//! What a run measured, with the settings it ran under, as a table or as JSON.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use crate::BenchOptions;
use crate::stats::Latency;

/// How a figure is read against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// `per_second` divided by the baseline's: above 1 is faster than the baseline.
    Throughput,
    /// p99 latency divided by the baseline's: how many times the baseline's wait.
    P99Latency,
    /// p50 latency divided by the baseline's: how many times the baseline's typical wait.
    P50Latency,
}

/// One measured figure, beside the baseline it is meant to be read against.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    /// What the scenario varies, in `level_unit`s: client concurrency, commands/s asked, events
    /// of history, follow-ups due. A figure is compared with the baseline at the same level.
    pub level: u64,
    pub level_unit: &'static str,
    /// How many `unit`s were measured.
    pub count: u64,
    pub unit: &'static str,
    pub per_second: f64,
    /// Per-item times: round trips, lag until visible, or due-to-fired delay.
    pub latency: Option<Latency>,
    pub errors: u64,
    pub conflicts: u64,
    /// The baseline scenario this figure divides by, how, and the ratio.
    pub baseline: Option<&'static str>,
    pub compare: Compare,
    pub ratio: Option<f64>,
    /// Further figures of this measurement (memory, rates asked, payload sizes), by name.
    pub extra: BTreeMap<&'static str, f64>,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        level: u64,
        level_unit: &'static str,
        unit: &'static str,
    ) -> Figure {
        Figure {
            scenario,
            level,
            level_unit,
            count: 0,
            unit,
            per_second: 0.0,
            latency: None,
            errors: 0,
            conflicts: 0,
            baseline: None,
            compare: Compare::Throughput,
            ratio: None,
            extra: BTreeMap::new(),
        }
    }

    /// Sets `count` and the rate it was measured at.
    pub fn measured(mut self, count: u64, seconds: f64) -> Figure {
        self.count = count;
        self.per_second = if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        };
        self.extra.insert("seconds", seconds);
        self
    }

    pub fn against(mut self, baseline: &'static str, compare: Compare) -> Figure {
        self.baseline = Some(baseline);
        self.compare = compare;
        self
    }

    pub fn with(mut self, name: &'static str, value: f64) -> Figure {
        self.extra.insert(name, value);
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub dealstream_version: &'static str,
    pub postgres_version: String,
    pub nats_server_version: String,
    /// PostgreSQL settings that move write and read figures.
    pub postgres: BTreeMap<&'static str, String>,
    pub cpus: usize,
    pub seconds_per_step: f64,
    pub clients: Vec<usize>,
    pub deals: usize,
    pub rates: Vec<u32>,
    pub backlog: u64,
    pub rebuild_events: u64,
    pub asof_events: u64,
    pub analytics_events: u64,
    pub timers: usize,
    /// Pool size and the services' tuning, as the scenarios ran them.
    pub services: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: RunSettings,
    pub figures: Vec<Figure>,
}

/// PostgreSQL settings recorded with every run.
const POSTGRES_SETTINGS: [&str; 7] = [
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "shared_buffers",
    "work_mem",
    "max_wal_size",
    "commit_delay",
];

impl Report {
    pub async fn new(
        database_url: &str,
        nats_url: &str,
        options: &BenchOptions,
    ) -> anyhow::Result<Report> {
        let pool = eventstore::pool_from_url(database_url, 1).context("DATABASE_URL")?;
        let client = pool
            .get()
            .await
            .context("could not connect to DATABASE_URL")?;
        let setting = |name: &'static str| {
            let client = &client;
            async move {
                let row = client
                    .query_one("select current_setting($1)", &[&name])
                    .await?;
                anyhow::Ok(row.get::<_, String>(0))
            }
        };
        let mut postgres = BTreeMap::new();
        for name in POSTGRES_SETTINGS {
            postgres.insert(name, setting(name).await?);
        }
        let nats = async_nats::connect(nats_url)
            .await
            .with_context(|| format!("could not connect to NATS at {nats_url} (set NATS_URL)"))?;
        let services = BTreeMap::from([
            ("pool_size", crate::deployment::POOL_SIZE as u64),
            ("relay_max_in_flight", relay::DEFAULT_MAX_IN_FLIGHT as u64),
            ("relay_read_batch", relay::DEFAULT_READ_BATCH as u64),
            (
                "rebuild_batch_size",
                projector::RebuildOptions::default().batch_size as u64,
            ),
        ]);
        Ok(Report {
            settings: RunSettings {
                dealstream_version: env!("CARGO_PKG_VERSION"),
                postgres_version: setting("server_version").await?,
                nats_server_version: nats.server_info().version,
                postgres,
                cpus: std::thread::available_parallelism().map_or(1, usize::from),
                seconds_per_step: options.seconds.as_secs_f64(),
                clients: options.clients.clone(),
                deals: options.deals,
                rates: options.rates.clone(),
                backlog: options.backlog,
                rebuild_events: options.rebuild_events,
                asof_events: options.asof_events,
                analytics_events: options.analytics_events,
                timers: options.timers,
                services,
            },
            figures: Vec::new(),
        })
    }

    pub fn figure(&self, scenario: &str, level: u64) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|figure| figure.scenario == scenario && figure.level == level)
    }

    /// Sets each figure's ratio to its baseline at the same level.
    pub fn link_baselines(&mut self) {
        let baselines: Vec<(&'static str, u64, f64, Option<Latency>)> = self
            .figures
            .iter()
            .map(|figure| {
                (
                    figure.scenario,
                    figure.level,
                    figure.per_second,
                    figure.latency,
                )
            })
            .collect();
        for figure in &mut self.figures {
            let Some(baseline) = figure.baseline else {
                continue;
            };
            let Some((_, _, per_second, base_latency)) = baselines
                .iter()
                .find(|(scenario, level, _, _)| *scenario == baseline && *level == figure.level)
            else {
                continue;
            };
            let latency_ratio =
                |percentile: fn(&Latency) -> f64| match (figure.latency, base_latency) {
                    (Some(latency), Some(base)) if percentile(base) > 0.0 => {
                        Some(percentile(&latency) / percentile(base))
                    }
                    _ => None,
                };
            figure.ratio = match figure.compare {
                Compare::Throughput => (*per_second > 0.0).then(|| figure.per_second / per_second),
                Compare::P99Latency => latency_ratio(|latency| latency.p99_ms),
                Compare::P50Latency => latency_ratio(|latency| latency.p50_ms),
            };
        }
    }

    pub fn to_table(&self) -> String {
        let settings = &self.settings;
        let postgres = |name: &str| settings.postgres.get(name).map_or("?", String::as_str);
        let mut table = format!(
            "dealstream bench {} | PostgreSQL {} (synchronous_commit={}, fsync={}, shared_buffers={}) \
             | NATS {} | {} cpus | {}s per step\n\n",
            settings.dealstream_version,
            settings.postgres_version,
            postgres("synchronous_commit"),
            postgres("fsync"),
            postgres("shared_buffers"),
            settings.nats_server_version,
            settings.cpus,
            settings.seconds_per_step,
        );
        table.push_str(&format!(
            "{:<16} {:>17} {:>9} {:>20} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5}  {:<28} {}\n",
            "scenario",
            "level",
            "count",
            "per second",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "errors",
            "confl",
            "vs baseline",
            "notes"
        ));
        for figure in &self.figures {
            let latency = |value: fn(&Latency) -> f64| {
                figure.latency.as_ref().map_or_else(
                    || "-".to_owned(),
                    |latency| format!("{:.2}", value(latency)),
                )
            };
            let versus = match (figure.baseline, figure.ratio, figure.compare) {
                (Some(baseline), Some(ratio), Compare::Throughput) => {
                    format!("{ratio:.2}x {baseline}")
                }
                (Some(baseline), Some(ratio), Compare::P99Latency) => {
                    format!("p99 {ratio:.1}x {baseline}")
                }
                (Some(baseline), Some(ratio), Compare::P50Latency) => {
                    format!("p50 {ratio:.1}x {baseline}")
                }
                _ => String::new(),
            };
            let notes: Vec<String> = figure
                .extra
                .iter()
                .filter(|(name, _)| **name != "seconds")
                .map(|(name, value)| format!("{name}={}", compact(*value)))
                .collect();
            table.push_str(&format!(
                "{:<16} {:>17} {:>9} {:>20} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5}  {:<28} {}\n",
                figure.scenario,
                format!("{} {}", figure.level, figure.level_unit),
                figure.count,
                format!("{:.1} {}/s", figure.per_second, figure.unit),
                latency(|latency| latency.p50_ms),
                latency(|latency| latency.p95_ms),
                latency(|latency| latency.p99_ms),
                latency(|latency| latency.max_ms),
                figure.errors,
                figure.conflicts,
                versus,
                notes.join(" ")
            ));
        }
        table
    }
}

/// A note's value without needless decimals.
fn compact(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
