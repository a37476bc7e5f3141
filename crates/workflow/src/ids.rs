//! Deterministic ids. Every command the workflow sends and every follow-up it creates has an id
//! derived (UUID v5) from what caused it, so that reacting twice to a redelivered event, or two
//! instances firing the same timer, sends the same command id twice and the event store's
//! idempotency turns the second into a no-op.

use chrono::{DateTime, Utc};
use domain::values::{FollowUpId, OpportunityId};
use uuid::Uuid;

/// The namespace of every id derived here; fixed forever, or redelivered events after an
/// upgrade would no longer map to the commands they already caused.
const NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_3f0e_5b2a_4c8e_9f41_2a7d_0c9e_8b13);

fn derive(parts: &[&[u8]]) -> Uuid {
    // A separator byte that never occurs in the parts keeps ("ab", "c") apart from ("a", "bc").
    let mut name = Vec::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for part in parts {
        name.extend_from_slice(part);
        name.push(0);
    }
    Uuid::new_v5(&NAMESPACE, &name)
}

/// The command a rule sends in reaction to an event (one per follow-up it touches, if any).
pub fn reaction_command(event_id: Uuid, rule: &str, follow_up: Option<FollowUpId>) -> Uuid {
    match follow_up {
        None => derive(&[b"reaction", event_id.as_bytes(), rule.as_bytes()]),
        Some(follow_up) => derive(&[
            b"reaction",
            event_id.as_bytes(),
            rule.as_bytes(),
            follow_up.0.as_bytes(),
        ]),
    }
}

/// The follow-up a rule schedules in reaction to an event.
pub fn scheduled_follow_up(event_id: Uuid, rule: &str) -> FollowUpId {
    FollowUpId(derive(&[
        b"follow-up",
        event_id.as_bytes(),
        rule.as_bytes(),
    ]))
}

/// A reminder without a scheduled follow-up behind it (`stale-deal`, `close-date-passed`):
/// one id per deal, kind and occurrence, so each occurrence fires once.
pub fn reminder(deal: OpportunityId, kind: &str, occurrence: &str) -> FollowUpId {
    FollowUpId(derive(&[
        b"reminder",
        deal.0.as_bytes(),
        kind.as_bytes(),
        occurrence.as_bytes(),
    ]))
}

/// The `FireFollowUp` command of a timer: derived from the timer (= follow-up) id alone, so it
/// is the same whichever instance fires it, however often.
pub fn fire_command(timer_id: Uuid) -> Uuid {
    derive(&[b"fire", timer_id.as_bytes()])
}

/// The `FireReminder` command of one attempt, at `attempted_at`, to fire a reminder's timer.
/// Unlike a follow-up, a reminder's outcome depends on when it is asked (a deal closed at one
/// attempt may be reopened, its close date still past, at the next), so each attempt is a
/// command of its own rather than a repeat answered with the first attempt's no-op. Firing
/// stays once only: the decider fires a reminder id at most once per deal.
pub fn fire_reminder_command(timer_id: Uuid, attempted_at: DateTime<Utc>) -> Uuid {
    derive(&[
        b"fire-reminder",
        timer_id.as_bytes(),
        &attempted_at.timestamp_micros().to_be_bytes(),
    ])
}

/// The `Route` command sent for a captured lead.
pub fn route_command(event_id: Uuid, rule: &str) -> Uuid {
    derive(&[b"route", event_id.as_bytes(), rule.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let event = Uuid::from_u128(1);
        assert_eq!(
            reaction_command(event, "a", None),
            reaction_command(event, "a", None)
        );
        assert_ne!(
            reaction_command(event, "a", None),
            reaction_command(event, "b", None)
        );
        assert_ne!(
            scheduled_follow_up(event, "ab").0,
            scheduled_follow_up(event, "a").0
        );
        assert_eq!(fire_command(event), fire_command(event));
    }
}
