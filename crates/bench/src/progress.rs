//! What the bench shows on stderr while it runs: one bar (or spinner) for the current step, only
//! when stderr is a terminal, so that logs and `--json` output stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Cheap to clone; every clone drives the same bar.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        let bar = enabled.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    /// A step of unknown length: a spinner with the elapsed time.
    pub fn step(&self, message: impl Into<String>) {
        let Some(bar) = &self.bar else { return };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_length(0);
        bar.set_position(0);
        bar.set_message(message.into());
        bar.reset_elapsed();
    }

    /// A step of `total` units: a bar with the rate and time left. Move it with [`set`].
    ///
    /// [`set`]: Progress::set
    pub fn counted(&self, message: impl Into<String>, total: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} ({elapsed}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_length(total);
        bar.set_position(0);
        bar.set_message(message.into());
        bar.reset_elapsed();
        bar.reset_eta();
    }

    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
