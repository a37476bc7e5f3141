//! The read side of dealstream: projections that follow the JetStream event
//! stream and keep the pipeline and forecast read models in PostgreSQL, their rebuild from the
//! event store, and the reads the API serves from them.
//!
//! - [`rules`] is the pure core: what an event does to a deal's row and where a deal counts on
//!   the board and in the forecast. The same functions fold history in memory ([`rules::fold_until`]).
//! - `persist` turns a batch of events into SQL: old contributions out, new ones in.
//! - [`runner`] owns consuming, batching, checkpoints, acknowledgement, leadership and shutdown;
//!   [`rebuild`] replays the store into fresh tables and swaps them in.
//! - [`read`] holds the queries over the tables, so that only this crate knows their shape.
//! - [`snapshot`] keeps periodic copies of the read models, written with the batches, and
//!   [`asof`] answers the same queries as of any earlier instant or position: the nearest
//!   snapshot, then the events after it folded through [`rules`].
//! - [`analytics`] folds the whole log for historical win rates, the forecast weighted with them
//!   and the accuracy of past forecasts.
//!
//! What it deliberately avoids: emitting events (projectors never write to the store), HTTP,
//! and any rule that is not in [`rules`]. Read `rules` first, then `runner`.

pub mod analytics;
pub mod asof;
pub mod backtest;
mod error;
mod persist;
pub mod read;
pub mod rebuild;
pub mod rules;
pub mod runner;
mod schema;
pub mod snapshot;

pub use error::ProjectorError;
pub use rebuild::{RebuildOptions, RebuildPhase, RebuildProgress, RebuildReport, rebuild};
pub use runner::{FaultHook, FaultPoint, ProjectorConfig, apply_batch, run, run_with_client};
pub use schema::{Migration, migrate, migrations};

/// A projection: a set of tables and the rules that keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// One row per deal (`deals`), its follow-ups (`follow_ups`) and the board (`board`).
    Pipeline,
    /// Per month, owner, pipeline and currency (`forecast`), with its own deal rows
    /// (`forecast_deals`).
    Forecast,
}

impl Projection {
    pub const ALL: [Projection; 2] = [Projection::Pipeline, Projection::Forecast];

    /// The name used on the command line, in checkpoints, metrics and consumer names.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Pipeline => "pipeline",
            Projection::Forecast => "forecast",
        }
    }

    pub fn parse(name: &str) -> Result<Projection, ProjectorError> {
        Projection::ALL
            .into_iter()
            .find(|projection| projection.name() == name)
            .ok_or_else(|| ProjectorError::UnknownProjection(name.to_owned()))
    }

    /// The tables this projection owns, its snapshots included; a rebuild replaces all of them
    /// at once, dropping them in this order. A query that reads two of them locks them in the
    /// order it names them (the follow-ups query: `follow_ups`, then `deals`), so they come in
    /// that order here: the other way round, the swap and such a reader could each hold the
    /// table the other waits for, and the reader would be ended as a deadlock.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Pipeline => &[
                "follow_ups",
                "deals",
                "board",
                "pipeline_snapshots",
                "pipeline_snapshot_deals",
            ],
            Projection::Forecast => &[
                "forecast_deals",
                "forecast",
                "forecast_snapshots",
                "forecast_snapshot_deals",
            ],
        }
    }

    /// The table of this projection's deal rows (the whole [`rules::DealView`] in `view`).
    pub(crate) fn deals_table(self) -> &'static str {
        match self {
            Projection::Pipeline => "deals",
            Projection::Forecast => "forecast_deals",
        }
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}
