//! The one place that installs the `tracing` subscriber.
//!
//! Binaries call [`init`] once in `main`, after reading [`Settings`](crate::Settings);
//! tests call [`init_test_tracing`]. The filter comes from `RUST_LOG` with
//! [`DEFAULT_FILTER`] as the fallback, and the writer can be injected so tests can
//! capture or silence the output. Installation uses `try_init`: when a subscriber is
//! already set (a second call, or a test harness that set its own), the call does nothing.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::settings::LogFormat;

/// Filter used when `RUST_LOG` is unset or empty: our own `info` events, without the
/// per-statement chatter of the Postgres driver.
pub const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

/// Installs the global subscriber, writing to standard error.
///
/// Logs go to standard error so that command output on standard output (the board and
/// forecast `demo` prints, `events tail`) stays clean for pipes. Colours are used only
/// when standard error is a terminal.
pub fn init(format: LogFormat) -> bool {
    install(format, std::io::stderr, std::io::stderr().is_terminal())
}

/// Installs the global subscriber with the given writer and no colours.
///
/// Returns `true` if this call installed it and `false` if one was already installed,
/// which is not an error: it makes calling this twice harmless.
pub fn init_tracing<W>(format: LogFormat, writer: W) -> bool
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    install(format, writer, false)
}

/// Turns logging on in tests, but only when `TEST_LOG` is set (to anything).
///
/// Output goes through the test harness's capture, so a failing test shows its own
/// logs and passing tests stay quiet. `RUST_LOG` still chooses the levels.
pub fn init_test_tracing() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let (filter, rejected) = filter_from_env();
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init()
        .is_ok();
    if installed {
        warn_about_rejected_filter(rejected);
    }
}

fn install<W>(format: LogFormat, writer: W, ansi: bool) -> bool
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let (filter, rejected) = filter_from_env();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init().is_ok(),
        // Span fields (stream id, correlation id, ...) are what make JSON logs searchable,
        // so the current span and its parents go into every line.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
            .is_ok(),
    };
    if installed {
        warn_about_rejected_filter(rejected);
    }
    installed
}

/// The filter from `RUST_LOG`, or the default together with the rejected `RUST_LOG`
/// text and its error, so a typo is reported instead of silently ignored.
fn filter_from_env() -> (EnvFilter, Option<(String, String)>) {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some((directives, error.to_string())),
            ),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}

fn warn_about_rejected_filter(rejected: Option<(String, String)>) {
    if let Some((directives, error)) = rejected {
        tracing::warn!(
            rust_log = %directives,
            %error,
            "ignoring invalid RUST_LOG, using {DEFAULT_FILTER:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }

    #[test]
    fn a_second_installation_is_harmless() {
        // Other tests in this binary may have installed one first; either way the
        // second call in a row must report "already installed" without panicking.
        init_tracing(LogFormat::Json, std::io::sink);
        assert!(!init_tracing(LogFormat::Text, std::io::sink));
        init_test_tracing();
    }
}
