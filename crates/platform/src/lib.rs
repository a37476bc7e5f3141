//! What every dealstream process shares: its settings, its logging and its shutdown signal.
//!
//! - [`Settings`] reads the environment variables of the README's configuration table once, with their
//!   documented defaults, and hides passwords from `Debug` ([`settings`]).
//! - [`telemetry`] is the single place that installs the `tracing` subscriber: filter
//!   from `RUST_LOG`, text or JSON, injectable writer, quiet tests unless `TEST_LOG`.
//! - [`shutdown_signal`] turns SIGINT or SIGTERM into a [`CancellationToken`], the one
//!   cancellation type every crate uses ([`shutdown`]).
//!
//! It deliberately knows nothing about Postgres, NATS, HTTP or the domain: it holds
//! connection strings but opens no connection, and the business rules file is parsed by
//! the crate that uses it. Keeping it that small lets every other crate depend on it
//! without pulling in adapters. Start with `Settings::from_env` in `settings.rs`.

pub mod errors;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use errors::error_chain;
pub use settings::{
    ConnectionUrl, DEFAULT_HTTP_REQUEST_TIMEOUT, LogFormat, Settings, StreamName, SubjectPrefix,
};
pub use shutdown::shutdown_signal;
pub use telemetry::{init_test_tracing, init_tracing};
pub use tokio_util::sync::CancellationToken;
