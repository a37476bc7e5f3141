//! The checks made once everything is back and quiet. Each returns the violations it found,
//! described well enough to start an investigation from, rather than stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde_json::Value;
use uuid::Uuid;

use crate::cluster::NATS_STREAM;
use crate::load::{ACTOR, Acknowledged};

/// One row of the events table.
#[derive(Debug)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    fn metadata(&self, field: &str) -> Option<&str> {
        self.metadata.get(field).and_then(Value::as_str)
    }

    fn data(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }
}

/// The whole log, in position order.
pub async fn load_events(client: &tokio_postgres::Client) -> Vec<StoredEvent> {
    client
        .query(
            "select position, event_id, stream_id, stream_version, event_type, data, metadata, \
             recorded_at from events order by position",
            &[],
        )
        .await
        .expect("read the events table")
        .into_iter()
        .map(|row| StoredEvent {
            position: row.get(0),
            event_id: row.get(1),
            stream_id: row.get(2),
            stream_version: row.get(3),
            event_type: row.get(4),
            data: row.get(5),
            metadata: row.get(6),
            recorded_at: row.get(7),
        })
        .collect()
}

/// The log itself: positions 1, 2, 3, ... without a gap, `recorded_at` never decreasing as the
/// position grows (so the store as of an instant is a prefix), each stream's versions 1, 2, 3, ...
pub fn check_log(events: &[StoredEvent]) -> Vec<String> {
    let mut violations = Vec::new();
    for pair in events.windows(2) {
        if pair[1].recorded_at < pair[0].recorded_at {
            violations.push(format!(
                "recorded_at goes back from {} at position {} to {} at position {}",
                pair[0].recorded_at, pair[0].position, pair[1].recorded_at, pair[1].position
            ));
        }
    }
    for (index, event) in events.iter().enumerate() {
        if event.position != index as i64 + 1 {
            violations.push(format!(
                "position {} is at index {index}: the log has a gap",
                event.position
            ));
            break;
        }
    }
    let mut versions: HashMap<&str, i64> = HashMap::new();
    for event in events {
        let version = versions.entry(&event.stream_id).or_default();
        *version += 1;
        if event.stream_version != *version {
            violations.push(format!(
                "{} has version {} at position {} where {} was next",
                event.stream_id, event.stream_version, event.position, version
            ));
        }
    }
    violations
}

/// Every acknowledged command's events are in the store exactly once: the events the load's
/// actor appended under the command's correlation id share one command id and form one
/// unbroken run of positions (one transaction) that ends at the answered position. A command
/// appended twice would leave two runs; a lost one, none. Also answers how many commands had
/// events to check.
pub fn check_acknowledged(
    events: &[StoredEvent],
    acknowledged: &[Acknowledged],
) -> (Vec<String>, usize) {
    let actor = format!("api:{ACTOR}");
    let mut by_correlation: HashMap<&str, Vec<&StoredEvent>> = HashMap::new();
    for event in events {
        if event.metadata("actor") == Some(actor.as_str())
            && let Some(correlation) = event.metadata("correlation_id")
        {
            by_correlation.entry(correlation).or_default().push(event);
        }
    }
    let mut violations = Vec::new();
    let mut with_events = 0;
    for command in acknowledged {
        let key = command.key.to_string();
        let answered = command.answer["position"].as_i64();
        let found = by_correlation
            .get(key.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some((first, last)) = found.first().zip(found.last()) else {
            if !command.may_be_noop {
                violations.push(format!(
                    "{} (key {key}) was acknowledged with {} but none of its events is stored",
                    command.route, command.answer
                ));
            }
            continue;
        };
        with_events += 1;
        let command_ids: Vec<_> = found
            .iter()
            .map(|event| event.metadata("command_id"))
            .collect();
        let contiguous = last.position - first.position + 1 == found.len() as i64;
        if !contiguous || command_ids.windows(2).any(|pair| pair[0] != pair[1]) {
            violations.push(format!(
                "{} (key {key}) has its events at positions {:?}: stored more than once",
                command.route,
                found.iter().map(|event| event.position).collect::<Vec<_>>()
            ));
        } else if answered != Some(last.position) {
            violations.push(format!(
                "{} (key {key}) was answered {} but its events end at position {}",
                command.route, command.answer, last.position
            ));
        }
    }
    (violations, with_events)
}

/// The JetStream stream holds every event exactly once, in position order: message n is the
/// event at position n, with its event id as `Nats-Msg-Id`.
pub async fn check_stream(nats_url: &str, events: &[StoredEvent]) -> Vec<String> {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to the private nats-server");
    let context = jetstream::new(client);
    let mut stream = context
        .get_stream(NATS_STREAM)
        .await
        .expect("the events stream exists");
    let info = stream.info().await.expect("stream info").state.clone();
    let mut violations = Vec::new();
    if info.messages != events.len() as u64 || info.first_sequence > 1 {
        violations.push(format!(
            "the stream holds {} messages (sequences {}..={}) for {} stored events",
            info.messages,
            info.first_sequence,
            info.last_sequence,
            events.len()
        ));
    }
    if info.messages == 0 {
        return violations;
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut expected = events.iter();
    for _ in 0..info.messages {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream's messages arrive")
            .expect("the stream continues")
            .expect("a message");
        let headers = message.headers.clone().unwrap_or_default();
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        let position = header("Dealstream-Position");
        let message_id = header("Nats-Msg-Id");
        match expected.next() {
            Some(event)
                if position.as_deref() == Some(event.position.to_string().as_str())
                    && message_id.as_deref() == Some(event.event_id.to_string().as_str()) => {}
            Some(event) => {
                violations.push(format!(
                    "stream sequence {sequence} holds position {position:?} (message id \
                     {message_id:?}) where the store has position {} (event {})",
                    event.position, event.event_id
                ));
                // After the first mismatch every later message is off too.
                break;
            }
            None => {
                violations.push(format!(
                    "stream sequence {sequence} (position {position:?}) has no stored event"
                ));
                break;
            }
        }
    }
    violations
}

/// The read models' tables as sorted rows of JSON, to compare with a fresh replay.
pub async fn snapshot_read_models(
    client: &tokio_postgres::Client,
) -> BTreeMap<&'static str, Vec<String>> {
    let mut tables = BTreeMap::new();
    for table in ["deals", "follow_ups", "board", "forecast_deals", "forecast"] {
        let mut rows: Vec<String> = client
            .query(&format!("select to_jsonb(t)::text from {table} t"), &[])
            .await
            .unwrap_or_else(|error| panic!("read {table}: {error}"))
            .into_iter()
            .map(|row| row.get(0))
            .collect();
        rows.sort();
        tables.insert(table, rows);
    }
    tables
}

pub fn compare_read_models(
    live: &BTreeMap<&'static str, Vec<String>>,
    replayed: &BTreeMap<&'static str, Vec<String>>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (table, live_rows) in live {
        let replayed_rows = &replayed[table];
        if live_rows == replayed_rows {
            continue;
        }
        let only_live: Vec<_> = live_rows
            .iter()
            .filter(|row| !replayed_rows.contains(row))
            .take(3)
            .collect();
        let only_replayed: Vec<_> = replayed_rows
            .iter()
            .filter(|row| !live_rows.contains(row))
            .take(3)
            .collect();
        violations.push(format!(
            "{table}: {} live rows, {} replayed; only live: {only_live:?}; only replayed: \
             {only_replayed:?}",
            live_rows.len(),
            replayed_rows.len()
        ));
    }
    violations
}

#[derive(Debug, Default)]
pub struct FollowUpFigures {
    pub scheduled: u64,
    pub fired: u64,
    pub reminders_fired: u64,
}

#[derive(Default)]
struct FollowUpState {
    due_at: Option<DateTime<Utc>>,
    kind: String,
    ended: bool,
    fired: u32,
}

#[derive(Default)]
struct DealState<'a> {
    closed: bool,
    expected_close_date: Option<&'a str>,
    follow_ups: BTreeMap<&'a str, FollowUpState>,
}

/// Follow-ups and reminders: none fired twice, none fired on a closed deal or after it was
/// completed or cancelled, and every one that was due before `quiet_at` (less a grace for the
/// firing itself) and never completed or cancelled on a deal that is open fired. An open deal
/// whose close date had passed by then got its `close-date-passed` reminder for that date.
pub fn check_follow_ups(
    events: &[StoredEvent],
    quiet_at: DateTime<Utc>,
) -> (Vec<String>, FollowUpFigures) {
    let grace = TimeDelta::seconds(3);
    let mut deals: BTreeMap<&str, DealState> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut figures = FollowUpFigures::default();
    for event in events {
        if !event.stream_id.starts_with("opportunity-") {
            continue;
        }
        let deal = deals.entry(&event.stream_id).or_default();
        let follow_up_id = event.data("follow_up_id").unwrap_or_default();
        match event.event_type.as_str() {
            "OpportunityCreated" | "CloseDateChanged" => {
                deal.expected_close_date = event.data("expected_close_date");
            }
            "OpportunityClosed" => deal.closed = true,
            "OpportunityReopened" => deal.closed = false,
            "FollowUpScheduled" => {
                figures.scheduled += 1;
                let due_at = event
                    .data("due_at")
                    .and_then(|due| DateTime::parse_from_rfc3339(due).ok())
                    .map(|due| due.with_timezone(&Utc));
                deal.follow_ups.insert(
                    follow_up_id,
                    FollowUpState {
                        due_at,
                        kind: event.data("kind").unwrap_or_default().to_owned(),
                        ..FollowUpState::default()
                    },
                );
            }
            "FollowUpCompleted" | "FollowUpCancelled" => {
                deal.follow_ups.entry(follow_up_id).or_default().ended = true;
            }
            "FollowUpDue" => {
                let kind = event.data("kind").unwrap_or_default();
                let scheduled = deal.follow_ups.contains_key(follow_up_id);
                if scheduled {
                    figures.fired += 1;
                } else {
                    figures.reminders_fired += 1;
                }
                let follow_up =
                    deal.follow_ups
                        .entry(follow_up_id)
                        .or_insert_with(|| FollowUpState {
                            kind: kind.to_owned(),
                            due_at: event
                                .data("due_at")
                                .and_then(|due| DateTime::parse_from_rfc3339(due).ok())
                                .map(|due| due.with_timezone(&Utc)),
                            ..FollowUpState::default()
                        });
                follow_up.fired += 1;
                let at = format!(
                    "{} v{} (position {}, {kind} {follow_up_id})",
                    event.stream_id, event.stream_version, event.position
                );
                if follow_up.fired > 1 {
                    violations.push(format!("{at} fired {} times", follow_up.fired));
                }
                if deal.closed {
                    violations.push(format!("{at} fired on a closed deal"));
                }
                if follow_up.ended {
                    violations.push(format!("{at} fired after it was completed or cancelled"));
                }
            }
            _ => {}
        }
    }
    let deadline = quiet_at - grace;
    for (stream_id, deal) in &deals {
        if deal.closed {
            continue;
        }
        for (follow_up_id, follow_up) in &deal.follow_ups {
            let due = follow_up.due_at.is_some_and(|due_at| due_at < deadline);
            if due && !follow_up.ended && follow_up.fired == 0 {
                violations.push(format!(
                    "{stream_id}: follow-up {} {follow_up_id} was due at {:?} and never fired",
                    follow_up.kind, follow_up.due_at
                ));
            }
        }
        let passed_at = deal
            .expected_close_date
            .and_then(|date| date.parse::<chrono::NaiveDate>().ok())
            .and_then(|date| date.succ_opt())
            .map(|day_after| day_after.and_time(chrono::NaiveTime::MIN).and_utc());
        if let Some(passed_at) = passed_at.filter(|passed_at| *passed_at < deadline) {
            let reminded = deal.follow_ups.values().any(|follow_up| {
                follow_up.kind == "close-date-passed"
                    && follow_up.due_at == Some(passed_at)
                    && follow_up.fired == 1
            });
            if !reminded {
                violations.push(format!(
                    "{stream_id}: open, its close date passed at {passed_at}, and no \
                     close-date-passed reminder fired for it"
                ));
            }
        }
    }
    (violations, figures)
}

/// The checks themselves must be able to fail: each is shown a log that breaks its promise.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Log {
        events: Vec<StoredEvent>,
        versions: HashMap<String, i64>,
        at: DateTime<Utc>,
    }

    impl Log {
        fn new() -> Log {
            Log {
                events: Vec::new(),
                versions: HashMap::new(),
                at: "2026-12-01T10:00:00Z".parse().expect("an instant"),
            }
        }

        fn append(&mut self, stream_id: &str, event_type: &str, data: Value, key: &str) {
            let version = self.versions.entry(stream_id.to_owned()).or_default();
            *version += 1;
            self.at += TimeDelta::seconds(1);
            self.events.push(StoredEvent {
                position: self.events.len() as i64 + 1,
                event_id: Uuid::now_v7(),
                stream_id: stream_id.to_owned(),
                stream_version: *version,
                event_type: event_type.to_owned(),
                data,
                metadata: json!({
                    "actor": format!("api:{ACTOR}"),
                    "correlation_id": key,
                    "command_id": format!("command {key}"),
                }),
                recorded_at: self.at,
            });
        }
    }

    fn acknowledged(key: Uuid, position: i64) -> Acknowledged {
        Acknowledged {
            key,
            route: "/v1/opportunities/x/activities".to_owned(),
            answer: json!({ "id": "x", "version": 1, "position": position }),
            may_be_noop: false,
        }
    }

    #[test]
    fn a_command_stored_twice_or_not_at_all_is_a_violation() {
        let (once, twice, lost) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut log = Log::new();
        log.append(
            "opportunity-a",
            "ActivityLogged",
            json!({}),
            &once.to_string(),
        );
        log.append(
            "opportunity-a",
            "ActivityLogged",
            json!({}),
            &twice.to_string(),
        );
        log.append("opportunity-a", "AmountChanged", json!({}), "someone else");
        log.append(
            "opportunity-a",
            "ActivityLogged",
            json!({}),
            &twice.to_string(),
        );
        let (violations, with_events) = check_acknowledged(
            &log.events,
            &[
                acknowledged(once, 1),
                acknowledged(twice, 4),
                acknowledged(lost, 5),
            ],
        );
        assert_eq!(with_events, 2);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].contains("more than once"));
        assert!(violations[1].contains("none of its events"));
    }

    #[test]
    fn a_gap_or_a_clock_going_back_is_a_violation() {
        let mut log = Log::new();
        for _ in 0..3 {
            log.append("lead-a", "LeadCaptured", json!({}), "k");
        }
        log.events[2].recorded_at = log.events[0].recorded_at;
        log.events[1].position = 7;
        let violations = check_log(&log.events);
        assert_eq!(violations.len(), 2, "{violations:?}");
    }

    #[test]
    fn follow_ups_fired_twice_on_a_closed_deal_or_never_are_violations() {
        let quiet_at: DateTime<Utc> = "2026-12-01T11:00:00Z".parse().expect("an instant");
        let due = json!({ "follow_up_id": "f1", "kind": "first-contact", "due_at": "2026-12-01T10:30:00Z" });
        let mut log = Log::new();
        log.append(
            "opportunity-a",
            "OpportunityCreated",
            json!({ "expected_close_date": "2027-01-01" }),
            "k",
        );
        log.append("opportunity-a", "FollowUpScheduled", due.clone(), "k");
        log.append("opportunity-a", "FollowUpDue", due.clone(), "k");
        log.append("opportunity-a", "FollowUpDue", due.clone(), "k");
        log.append(
            "opportunity-b",
            "OpportunityCreated",
            json!({ "expected_close_date": "2027-01-01" }),
            "k",
        );
        log.append("opportunity-b", "FollowUpScheduled", due.clone(), "k");
        log.append(
            "opportunity-c",
            "OpportunityCreated",
            json!({ "expected_close_date": "2027-01-01" }),
            "k",
        );
        log.append(
            "opportunity-c",
            "OpportunityClosed",
            json!({ "outcome": "won" }),
            "k",
        );
        log.append(
            "opportunity-c",
            "FollowUpDue",
            json!({ "follow_up_id": "r1", "kind": "stale-deal" }),
            "k",
        );
        let (violations, figures) = check_follow_ups(&log.events, quiet_at);
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].contains("fired 2 times"));
        assert!(violations[1].contains("on a closed deal"));
        assert!(violations[2].contains("never fired"));
        assert_eq!(
            (figures.scheduled, figures.fired, figures.reminders_fired),
            (2, 2, 1)
        );
    }

    #[test]
    fn a_follow_up_completed_before_it_was_due_need_not_fire() {
        let quiet_at: DateTime<Utc> = "2026-12-01T11:00:00Z".parse().expect("an instant");
        let mut log = Log::new();
        log.append(
            "opportunity-a",
            "OpportunityCreated",
            json!({ "expected_close_date": "2027-01-01" }),
            "k",
        );
        log.append(
            "opportunity-a",
            "FollowUpScheduled",
            json!({ "follow_up_id": "f1", "kind": "first-contact", "due_at": "2026-12-01T10:30:00Z" }),
            "k",
        );
        log.append(
            "opportunity-a",
            "FollowUpCompleted",
            json!({ "follow_up_id": "f1" }),
            "k",
        );
        let (violations, _) = check_follow_ups(&log.events, quiet_at);
        assert!(violations.is_empty(), "{violations:?}");
    }
}
