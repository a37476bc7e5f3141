//! The faults: `kill -9` of a service, a freeze (SIGSTOP, then SIGCONT) longer than the
//! product's timeouts, a restart of the nats-server, a restart of PostgreSQL. A supervisor
//! restarts any service that ends on its own meanwhile, as systemd would, and notes it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Mutex;

use crate::Rng;
use crate::cluster::{Nats, Postgres, Role, Services, ShutdownMode, signal};

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Kill(Role),
    Freeze(Role),
    RestartNats,
    RestartPostgres(ShutdownMode),
}

impl fmt::Display for Fault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(role) => write!(formatter, "kill -9 {role}"),
            Fault::Freeze(role) => write!(formatter, "freeze {role}"),
            Fault::RestartNats => formatter.write_str("restart nats-server"),
            Fault::RestartPostgres(mode) => write!(formatter, "restart postgres ({mode})"),
        }
    }
}

/// One round of faults: every service killed once, two freezes, one NATS restart and a
/// PostgreSQL restart of each mode, in a random order. Each round covers every kind of fault,
/// so even the quick size exercises them all.
pub fn round(rng: &mut Rng) -> Vec<Fault> {
    let mut faults: Vec<Fault> = Role::ALL.into_iter().map(Fault::Kill).collect();
    for _ in 0..2 {
        faults.push(Fault::Freeze(Role::ALL[rng.below(Role::ALL.len())]));
    }
    faults.push(Fault::RestartNats);
    faults.push(Fault::RestartPostgres(ShutdownMode::Immediate));
    faults.push(Fault::RestartPostgres(ShutdownMode::Fast));
    rng.shuffle(&mut faults);
    faults
}

#[derive(Debug, Default)]
pub struct Tally {
    pub kills: BTreeMap<Role, u32>,
    pub freezes: BTreeMap<Role, u32>,
    pub nats_restarts: u32,
    pub postgres_restarts: BTreeMap<ShutdownMode, u32>,
}

impl Tally {
    pub fn faults(&self) -> u32 {
        self.kills.values().sum::<u32>()
            + self.freezes.values().sum::<u32>()
            + self.nats_restarts
            + self.postgres_restarts.values().sum::<u32>()
    }
}

pub struct Injector {
    pub services: Arc<Mutex<Services>>,
    pub nats: Nats,
    pub postgres: Postgres,
    /// How long a frozen process stays stopped: longer than the product's lock, transaction
    /// and request timeouts, so that they have to act.
    pub freeze: Duration,
    /// How long a killed service stays down before it is started again.
    pub downtime: Duration,
    pub tally: Tally,
}

impl Injector {
    pub async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Kill(role) => {
                self.services.lock().await.kill(role);
                tokio::time::sleep(self.downtime).await;
                self.services.lock().await.start(role);
                *self.tally.kills.entry(role).or_default() += 1;
            }
            Fault::Freeze(role) => {
                let Some(pid) = self.services.lock().await.pid(role) else {
                    return;
                };
                signal(pid, "STOP");
                tokio::time::sleep(self.freeze).await;
                signal(pid, "CONT");
                *self.tally.freezes.entry(role).or_default() += 1;
            }
            Fault::RestartNats => {
                self.nats.restart().await;
                self.tally.nats_restarts += 1;
            }
            Fault::RestartPostgres(mode) => {
                self.postgres.restart(mode).await;
                *self.tally.postgres_restarts.entry(mode).or_default() += 1;
            }
        }
    }
}

/// Restarts services that ended on their own until `stop` is set. It holds the services
/// weakly, so that a failing test drops (and kills) them at once, before the servers go.
pub async fn supervise(services: Weak<Mutex<Services>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(services) = services.upgrade() else {
            return;
        };
        services.lock().await.restart_exited();
        drop(services);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
