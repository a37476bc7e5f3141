//! Turning SIGINT and SIGTERM into one cancellation that every task can watch.
//!
//! `main` calls [`shutdown_signal`] once and hands clones (or child tokens) of the
//! returned [`CancellationToken`] to each service's `run`. Library code never listens
//! for signals itself: it takes the token as an argument, so tests trigger shutdown by
//! calling `cancel()` instead of sending signals to the test process.

use tokio_util::sync::CancellationToken;

/// Exit status used when a second signal cuts the graceful shutdown short
/// (128 + SIGINT, what shells report for an interrupted program).
const FORCED_EXIT_STATUS: i32 = 130;

/// Spawns the task that cancels the returned token on the first SIGINT or SIGTERM.
///
/// A second signal exits the process at once with status 130, for the operator whose
/// shutdown is stuck. That is safe for the data: every append is one transaction, so
/// an interrupted one leaves nothing behind, and unacknowledged messages are redelivered.
///
/// # Panics
///
/// When called outside a Tokio runtime.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let mut signals = Signals::register();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::info!(
            signal = name,
            "shutdown requested, finishing in-flight work"
        );
        cancel.cancel();
        let name = signals.next().await;
        tracing::warn!(signal = name, "second signal, exiting without waiting");
        std::process::exit(FORCED_EXIT_STATUS);
    });
    token
}

/// The signal streams, registered before the task starts so no early signal is missed.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    #[cfg(unix)]
    fn register() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        // Registration only fails if the process cannot install handlers at all; then
        // the other signal (or none) still works, which beats refusing to start.
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::error!(signal = name, %error, "cannot listen for signal");
                None
            }
        };
        Signals {
            interrupt: open(SignalKind::interrupt(), "SIGINT"),
            terminate: open(SignalKind::terminate(), "SIGTERM"),
        }
    }

    #[cfg(not(unix))]
    fn register() -> Signals {
        Signals {}
    }

    /// Waits for the next signal and returns its name; never returns if none can arrive.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        async fn receive(stream: &mut Option<tokio::signal::unix::Signal>) {
            match stream {
                Some(stream) => {
                    // `None` means the stream can yield no more signals.
                    if stream.recv().await.is_none() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = receive(&mut self.interrupt) => "SIGINT",
            () = receive(&mut self.terminate) => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "ctrl-c",
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = shutdown_signal();
        assert!(!token.is_cancelled());
        // The handler is registered before `shutdown_signal` returns, so the signal
        // reaches it instead of terminating the test process.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("the kill command runs");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("the token is cancelled soon after SIGTERM");
    }
}
