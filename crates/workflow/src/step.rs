//! The pure part of the workflow: given the rules, a triggering event and the deal as the
//! workflow should see it, which commands to send and which timers should exist. No I/O and no
//! clock: the shell (`consumer`, `timers`) passes the times it needs and carries the results out.
//!
//! Rules are decided against the deal as of their triggering event ([`deal_as_of`]): its stream
//! up to that event, plus the workflow's own reactions to the events before it, wherever they
//! landed in the stream. That is what a workflow that had kept up would have seen, so the outcome
//! does not depend on how late, in what order or by which instance an event is handled (the shell
//! handles one deal's events in stream order). A decision on that older state must still be valid
//! now: the domain refuses what the deal no longer accepts, and a stage move carries the stage
//! it was decided in ([`DealAction::MoveToStage`]), so a late reaction never moves a deal back.
//! Timers are planned from the deal's current state.

use std::collections::HashMap;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use domain::Decider;
use domain::lead::LeadProfile;
use domain::opportunity::{FollowUpStatus, Opportunity, OpportunityDecider, OpportunityEvent};
use domain::values::{FollowUpId, FollowUpKind, OpportunityId, Owner, StageName, Text};
use uuid::Uuid;

use crate::config::{Action, Assignment, Condition, Routing, WorkflowConfig};
use crate::ids;

/// Kind (and rule name) of the reminder for a deal without activity.
pub const STALE_DEAL: &str = domain::opportunity::Reminder::STALE_DEAL;
/// Kind (and rule name) of the reminder for an open deal past its expected close date.
pub const CLOSE_DATE_PASSED: &str = domain::opportunity::Reminder::CLOSE_DATE_PASSED;

/// One command a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The rule's name; the command's actor is `workflow:<rule>`.
    pub rule: String,
    /// Derived from the triggering event, the rule and the follow-up: a redelivery repeats it.
    pub command_id: Uuid,
    pub action: DealAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DealAction {
    ScheduleFollowUp {
        follow_up_id: FollowUpId,
        kind: FollowUpKind,
        due_at: DateTime<Utc>,
    },
    /// Only while the deal is still in `from`, the stage the rule saw: a deal moved on since (by
    /// someone else) is left where it is.
    MoveToStage {
        from: StageName,
        stage: StageName,
        reason: Text,
    },
    CompleteFollowUp {
        follow_up_id: FollowUpId,
    },
    CancelFollowUp {
        follow_up_id: FollowUpId,
        reason: Text,
    },
}

/// A deal folded from its stream, with the two facts the domain state does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealView {
    pub deal: Opportunity,
    /// When the deal last showed life: the latest of its creation or reopening (when they
    /// occurred) and its activities' `occurred_at`. `stale-deal` counts from here.
    pub activity_baseline: DateTime<Utc>,
    /// The rule that scheduled each follow-up, for the actor of its `FollowUpDue`.
    pub follow_up_rules: HashMap<FollowUpId, String>,
}

impl DealView {
    /// Folds `(occurred_at, event)` pairs, oldest first; `None` until the deal is created.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = (DateTime<Utc>, &'a OpportunityEvent)>,
    ) -> Option<DealView> {
        let mut state = None;
        let mut baseline: Option<DateTime<Utc>> = None;
        let mut rules = HashMap::new();
        for (occurred_at, event) in events {
            state = OpportunityDecider::evolve(state, event);
            match event {
                OpportunityEvent::OpportunityCreated(_)
                | OpportunityEvent::OpportunityReopened { .. } => {
                    baseline = baseline.max(Some(occurred_at));
                }
                OpportunityEvent::ActivityLogged { occurred_at, .. } => {
                    baseline = baseline.max(Some(*occurred_at));
                }
                OpportunityEvent::FollowUpScheduled {
                    follow_up_id, rule, ..
                } => {
                    rules.insert(*follow_up_id, rule.as_str().to_owned());
                }
                _ => {}
            }
        }
        let deal = state?;
        Some(DealView {
            activity_baseline: baseline.unwrap_or(DateTime::<Utc>::MIN_UTC),
            deal,
            follow_up_rules: rules,
        })
    }
}

/// One event of a deal's stream, with what [`deal_as_of`] needs to know of where it came from.
#[derive(Debug, Clone, Copy)]
pub struct StreamEvent<'a> {
    pub event_id: Uuid,
    pub version: i64,
    /// The event a workflow rule appended this one in reaction to (its causation id); `None`
    /// for everything else, including the `FollowUpDue` of a timer, which is no reaction.
    pub reaction_to: Option<Uuid>,
    pub event: &'a OpportunityEvent,
}

/// The deal as the rules should see it when reacting to the event at `version`: the stream up
/// to it, plus the reactions to earlier events appended after it (a workflow that had kept up
/// would have appended them before it). Reactions to the event itself are left out, so deciding
/// again after a crash gives the same answer. `None` until the deal is created.
pub fn deal_as_of(stream: &[StreamEvent<'_>], version: i64) -> Option<Opportunity> {
    let earlier: std::collections::HashSet<Uuid> = stream
        .iter()
        .filter(|event| event.version < version)
        .map(|event| event.event_id)
        .collect();
    stream
        .iter()
        .filter(|event| {
            event.version <= version
                || event
                    .reaction_to
                    .is_some_and(|cause| earlier.contains(&cause))
        })
        .fold(None, |state, event| {
            OpportunityDecider::evolve(state, event.event)
        })
}

/// Whether the workflow leaves an event alone: imported history (it occurred before it was
/// recorded) that happened longer than `horizon` before `now`. The rules are about deals being
/// worked now; following up last year's deals would flood their owners with overdue reminders.
pub fn beyond_horizon(
    horizon: TimeDelta,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    occurred_at < recorded_at && now - occurred_at > horizon
}

/// The commands the rules ask for in reaction to `event` (of type `event_type`, id `event_id`,
/// which occurred at `occurred_at`). `deal` is the deal as of the event ([`deal_as_of`]).
///
/// Follow-ups fall due `after` the event occurred, not after the workflow got to it: a backlog
/// or a redelivery then neither delays them nor gives one follow-up different due times, and an
/// imported event's follow-up falls due when it would have, had the deal been entered live.
pub fn react(
    config: &WorkflowConfig,
    event_id: Uuid,
    event_type: &str,
    event: &OpportunityEvent,
    deal: &Opportunity,
    occurred_at: DateTime<Utc>,
) -> Vec<Reaction> {
    let mut reactions = Vec::new();
    for rule in config
        .rules
        .iter()
        .filter(|rule| rule.on == event_type && matches(&rule.when, event, deal))
    {
        let reason = Text::parse(
            "reason",
            &format!("workflow rule {}", rule.name),
            Text::SHORT,
        )
        // A rule name is a slug of at most 64 bytes, so the text is valid by construction.
        .unwrap_or_else(|_| unreachable!());
        for action in &rule.actions {
            match action {
                Action::ScheduleFollowUp { kind, after } => {
                    let follow_up_id = ids::scheduled_follow_up(event_id, &rule.name);
                    if deal.is_open() && !deal.follow_ups.contains_key(&follow_up_id) {
                        reactions.push(Reaction {
                            rule: rule.name.clone(),
                            command_id: ids::reaction_command(event_id, &rule.name, None),
                            action: DealAction::ScheduleFollowUp {
                                follow_up_id,
                                kind: kind.clone(),
                                due_at: occurred_at + *after,
                            },
                        });
                    }
                }
                Action::MoveToStage(stage) => {
                    if deal.is_open() && &deal.stage != stage {
                        reactions.push(Reaction {
                            rule: rule.name.clone(),
                            command_id: ids::reaction_command(event_id, &rule.name, None),
                            action: DealAction::MoveToStage {
                                from: deal.stage.clone(),
                                stage: stage.clone(),
                                reason: reason.clone(),
                            },
                        });
                    }
                }
                Action::CompleteFollowUps(selection) | Action::CancelFollowUps(selection) => {
                    let complete = matches!(action, Action::CompleteFollowUps(_));
                    for (follow_up_id, follow_up) in &deal.follow_ups {
                        if !follow_up.status.is_pending() || !selection.includes(&follow_up.kind) {
                            continue;
                        }
                        let command_id =
                            ids::reaction_command(event_id, &rule.name, Some(*follow_up_id));
                        let action = if complete {
                            DealAction::CompleteFollowUp {
                                follow_up_id: *follow_up_id,
                            }
                        } else {
                            DealAction::CancelFollowUp {
                                follow_up_id: *follow_up_id,
                                reason: reason.clone(),
                            }
                        };
                        reactions.push(Reaction {
                            rule: rule.name.clone(),
                            command_id,
                            action,
                        });
                    }
                }
            }
        }
    }
    reactions
}

fn matches(condition: &Condition, event: &OpportunityEvent, deal: &Opportunity) -> bool {
    fn within<T: PartialEq>(list: &Option<Vec<T>>, value: Option<&T>) -> bool {
        match (list, value) {
            (None, _) => true,
            (Some(list), Some(value)) => list.contains(value),
            (Some(_), None) => false,
        }
    }
    let (activity_kind, from_stage, to_stage, outcome) = match event {
        OpportunityEvent::ActivityLogged { kind, .. } => (Some(kind), None, None, None),
        OpportunityEvent::StageChanged { from, to, .. } => (None, Some(from), Some(to), None),
        OpportunityEvent::OpportunityClosed { outcome, .. } => (None, None, None, Some(outcome)),
        _ => (None, None, None, None),
    };
    within(&condition.stage, Some(&deal.stage))
        && within(&condition.activity_kind, activity_kind)
        && within(&condition.from_stage, from_stage)
        && within(&condition.to_stage, to_stage)
        && within(&condition.outcome, outcome)
}

/// A timer that should exist for a deal: a scheduled follow-up or a reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTimer {
    /// The follow-up id it fires (derived for reminders).
    pub timer_id: FollowUpId,
    pub kind: FollowUpKind,
    /// The rule its `FollowUpDue` is attributed to.
    pub rule: String,
    pub due_at: DateTime<Utc>,
}

/// Every timer the deal should have right now. The shell makes the stored timers of the deal
/// match this list (ignoring ones already fired), so a completed, cancelled or closed-over
/// follow-up loses its timer and a moved close date moves its reminder.
pub fn plan_timers(
    config: &WorkflowConfig,
    deal_id: OpportunityId,
    view: &DealView,
) -> Vec<PlannedTimer> {
    let deal = &view.deal;
    if !deal.is_open() {
        return Vec::new();
    }
    let mut timers: Vec<PlannedTimer> = deal
        .follow_ups
        .iter()
        .filter(|(_, follow_up)| follow_up.status == FollowUpStatus::Open)
        .map(|(follow_up_id, follow_up)| PlannedTimer {
            timer_id: *follow_up_id,
            kind: follow_up.kind.clone(),
            rule: view
                .follow_up_rules
                .get(follow_up_id)
                .cloned()
                .unwrap_or_else(|| "follow-up".to_owned()),
            due_at: follow_up.due_at,
        })
        .collect();

    if let Some(stale_after) = config.reminders.stale_after {
        // One occurrence per baseline: new activity starts a new one, a fired one stays fired.
        let occurrence = view.activity_baseline.timestamp_micros().to_string();
        let timer_id = ids::reminder(deal_id, STALE_DEAL, &occurrence);
        if !deal.follow_ups.contains_key(&timer_id) {
            // A deal with a follow-up planned ahead is not stale: the earliest it can become
            // stale is when the last planned follow-up falls due.
            let planned_until = timers.iter().map(|timer| timer.due_at).max();
            let due_at = (view.activity_baseline + stale_after)
                .max(planned_until.unwrap_or(DateTime::<Utc>::MIN_UTC));
            timers.push(PlannedTimer {
                timer_id,
                kind: kind(STALE_DEAL),
                rule: STALE_DEAL.to_owned(),
                due_at,
            });
        }
    }

    if config.reminders.close_date_passed {
        let date = deal.expected_close_date;
        let timer_id = ids::reminder(deal_id, CLOSE_DATE_PASSED, &date.to_string());
        if !deal.follow_ups.contains_key(&timer_id) {
            // The date has passed once the whole day is over, in UTC like every timestamp.
            let due_at = (date.and_time(NaiveTime::MIN) + TimeDelta::days(1)).and_utc();
            timers.push(PlannedTimer {
                timer_id,
                kind: kind(CLOSE_DATE_PASSED),
                rule: CLOSE_DATE_PASSED.to_owned(),
                due_at,
            });
        }
    }
    timers
}

fn kind(name: &str) -> FollowUpKind {
    // Both reminder kinds are constant slugs.
    FollowUpKind::parse(name).unwrap_or_else(|_| unreachable!())
}

/// Who a captured lead goes to, and by which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// The routing rule's name, or `default` when none matched.
    pub rule: &'a str,
    pub assignment: RouteAssignment<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAssignment<'a> {
    /// Take the team's next turn (the shell keeps the durable counter).
    Team(&'a [Owner]),
    Owner(&'a Owner),
}

/// Name of the pseudo-rule that assigns the default owner.
pub const DEFAULT_ROUTE: &str = "default";

/// The first routing rule whose field matches hold for the lead, or the default owner.
pub fn choose_route<'a>(routing: &'a Routing, lead: &LeadProfile) -> Route<'a> {
    for rule in &routing.rules {
        let country_ok = match &rule.when.country {
            None => true,
            Some(countries) => lead
                .country
                .as_ref()
                .is_some_and(|country| countries.contains(country)),
        };
        let source_ok = match &rule.when.source {
            None => true,
            Some(sources) => lead.source.as_ref().is_some_and(|source| {
                let source = source.as_str().trim().to_lowercase();
                sources.contains(&source)
            }),
        };
        if country_ok && source_ok {
            return Route {
                rule: &rule.name,
                assignment: match &rule.assign {
                    Assignment::RoundRobin(team) => RouteAssignment::Team(team),
                    Assignment::Owner(owner) => RouteAssignment::Owner(owner),
                },
            };
        }
    }
    Route {
        rule: DEFAULT_ROUTE,
        assignment: RouteAssignment::Owner(&routing.default_owner),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::beyond_horizon;

    #[test]
    fn only_imported_events_older_than_the_horizon_are_beyond_it() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().unwrap();
        let week = TimeDelta::days(7);
        let imported = |days_ago: i64| {
            let occurred_at = now - TimeDelta::days(days_ago);
            beyond_horizon(week, occurred_at, now - TimeDelta::hours(1), now)
        };
        assert!(imported(30));
        assert!(imported(8));
        assert!(!imported(6));
        assert!(!imported(0));
        // A live event occurred when it was recorded, however long ago that was.
        let long_ago = now - TimeDelta::days(30);
        assert!(!beyond_horizon(week, long_ago, long_ago, now));
    }
}
