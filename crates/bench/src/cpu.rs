//! CPU time, from `/proc`, so that a figure can say where a command's cost went: into the
//! dealstream server, into PostgreSQL, or into the load generator that shares the machine.
//!
//! The load generator runs on a thread of its own (see `commands::drive_commands`), so its time
//! is that thread's, and the server's is the rest of the process's. PostgreSQL's is the sum over
//! every process named `postgres` on this machine, which is the server the bench talks to when
//! `DATABASE_URL` points at localhost (elsewhere it reads zero, and the figure says nothing).
//! Counts are in clock ticks of 10 ms (Linux's `USER_HZ` is 100 on every architecture it
//! reports to user space), so they mean something over a step of seconds, not over one request.

use std::time::Duration;

const TICK: Duration = Duration::from_millis(10);

/// User plus system time from a `/proc/.../stat` line; `None` when it does not parse.
fn ticks(stat: &str) -> Option<u64> {
    // The command name, field 2, is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

fn read_ticks(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|stat| ticks(&stat))
        .unwrap_or(0)
}

/// CPU time of this process so far.
pub fn process() -> Duration {
    TICK * read_ticks("/proc/self/stat") as u32
}

/// CPU time of the calling thread so far.
pub fn this_thread() -> Duration {
    TICK * read_ticks("/proc/thread-self/stat") as u32
}

/// CPU time of every `postgres` process now running, so far.
pub fn postgres() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let total: u64 = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .filter_map(|stat| ticks(&stat))
        .sum();
    TICK * total as u32
}

/// The CPU time this process and PostgreSQL spend from its start to [`Meter::stop`].
pub struct Meter {
    process: Duration,
    postgres: Duration,
}

/// What a [`Meter`] measured.
pub struct Spent {
    pub process: Duration,
    pub postgres: Duration,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            process: process(),
            postgres: postgres(),
        }
    }

    pub fn stop(self) -> Spent {
        Spent {
            process: process().saturating_sub(self.process),
            postgres: postgres().saturating_sub(self.postgres),
        }
    }
}

/// Milliseconds of CPU per operation.
pub fn ms_per(time: Duration, operations: u64) -> f64 {
    time.as_secs_f64() * 1000.0 / operations.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::ticks;

    #[test]
    fn user_and_system_time_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (postgres: a b) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0";
        assert_eq!(ticks(stat), Some(325));
        assert_eq!(ticks("4242 (cut short) S 1"), None);
    }
}
