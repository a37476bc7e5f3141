//! The rules file (`DEALSTREAM_CONFIG`): follow-up rules, reminders and lead routing, parsed once
//! at start-up into [`WorkflowConfig`].
//!
//! Parsing is two-staged. Serde reads the TOML into `Raw*` structs that refuse unknown keys and
//! keep the byte span of every value the code checks itself; validation then turns them into the
//! typed config, so every refusal (a bad duration, an unknown event name, a rule without an
//! action, an unknown key) comes back as a [`ConfigError`] naming the line and the problem. Without
//! a file, [`WorkflowConfig::default`] is exactly the example deploy/dealstream.toml, kept
//! verbatim in [`DEFAULT_RULES`] so the two cannot drift apart.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::TimeDelta;
use domain::values::{ActivityKind, Country, FollowUpKind, Outcome, Owner, StageName, Text};
use serde::Deserialize;
use toml::Spanned;

/// The documented example file: the rules that apply when no file is given.
pub const DEFAULT_RULES: &str = r#"
[[workflow.rules]]
name = "first-contact"
on = "OpportunityCreated"
schedule_follow_up = { kind = "first-contact", after = "1d" }

[[workflow.rules]]
name = "contacted-on-first-touch"
on = "ActivityLogged"
when = { stage = ["new"], activity_kind = ["call", "email", "meeting"] }
move_to_stage = "contacted"
complete_follow_ups = ["first-contact"]

[[workflow.rules]]
name = "quote-sent"
on = "ActivityLogged"
when = { stage = ["new", "contacted"], activity_kind = ["quote_sent"] }
move_to_stage = "quoted"

[[workflow.rules]]
name = "quote-follow-up"
on = "StageChanged"
when = { to_stage = ["quoted"] }
schedule_follow_up = { kind = "quote-follow-up", after = "3d" }

[[workflow.rules]]
name = "close-cancels-follow-ups"
on = "OpportunityClosed"
cancel_follow_ups = "all"

[workflow.reminders]
stale_after = "14d"
close_date_passed = true

[routing]
default_owner = "unassigned"

[[routing.rules]]
name = "emea"
when = { country = ["DE", "FR", "GB"] }
round_robin = ["anna", "bruno", "chloe"]
"#;

/// How long fired timers are kept when the file does not say (`[workflow] timer_retention`).
pub const DEFAULT_TIMER_RETENTION: TimeDelta = TimeDelta::days(30);

/// How far back an imported event may have happened for the workflow to react to it, when the
/// file does not say (`[workflow] horizon`). A week covers the default rules' longest wait (a
/// quote's follow-up after 3 days) with room to spare, so a deal imported as it stands this week
/// is followed up as if it had been entered live, while last year's deals are left alone.
pub const DEFAULT_HORIZON: TimeDelta = TimeDelta::days(7);

/// The prior weight when the file does not say (`[forecast] prior_weight`).
pub const DEFAULT_PRIOR_WEIGHT: u32 = 5;

/// A prior worth more than a million closed deals would make the history meaningless.
const MAX_PRIOR_WEIGHT: u32 = 1_000_000;

/// Durations in the file are written as the API's look-backs are: `90s`, `15m`, `36h`, `3d`.
pub use domain::values::parse_duration;

/// The opportunity events a rule may react to (docs/events.md). Lead events are not
/// here: the only reaction to a lead is routing, which has its own section.
pub const OPPORTUNITY_EVENTS: [&str; 13] = domain::opportunity::EVENT_TYPES;

/// Why a rules file was refused. `Display` reads `path:line:column: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `None` for the built-in rules.
    pub path: Option<PathBuf>,
    /// 1-based; `None` when the problem has no place in the file (it could not be read).
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(formatter, "{}", path.display())?,
            None => formatter.write_str("built-in rules")?,
        }
        if let Some(line) = self.line {
            write!(formatter, ":{line}")?;
            if let Some(column) = self.column {
                write!(formatter, ":{column}")?;
            }
        }
        write!(formatter, ": {}", self.problem)
    }
}

/// Everything the workflow service is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// In file order; every matching rule acts, in this order.
    pub rules: Vec<Rule>,
    pub reminders: Reminders,
    pub routing: Routing,
    /// How long a fired (or given up) timer's row is kept, as a record, before the timer loop
    /// deletes it. The deal's history keeps its `FollowUpDue` for good.
    pub timer_retention: TimeDelta,
    /// Imported events (their `occurred_at` before their `recorded_at`) that happened longer ago
    /// than this trigger nothing: no rule, no timer plan, no lead routing. Live events are always
    /// handled, however late the workflow gets to them.
    pub horizon: TimeDelta,
    /// `[forecast] prior_weight`: how many imaginary deals at a stage's default probability each
    /// historical win rate starts from (`projector::analytics::Calibration::prior_weight`).
    pub prior_weight: u32,
}

impl Default for WorkflowConfig {
    /// The built-in rules, [`DEFAULT_RULES`].
    fn default() -> WorkflowConfig {
        // The built-in text is a constant tested by `defaults_parse`; failing here would be a
        // bug caught by that test, so fall back to an empty config rather than panic.
        parse(DEFAULT_RULES, None).unwrap_or_else(|error| {
            tracing::error!(%error, "built-in workflow rules are invalid");
            WorkflowConfig {
                rules: Vec::new(),
                reminders: Reminders::default(),
                routing: Routing {
                    default_owner: fallback_owner(),
                    rules: Vec::new(),
                },
                timer_retention: DEFAULT_TIMER_RETENTION,
                horizon: DEFAULT_HORIZON,
                prior_weight: DEFAULT_PRIOR_WEIGHT,
            }
        })
    }
}

fn fallback_owner() -> Owner {
    // "unassigned" is a valid owner by construction (non-empty, short, no control characters).
    Text::parse("owner", "unassigned", Text::SHORT).unwrap_or_else(|_| unreachable!())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A lower-case slug, unique among the rules; the actor of its commands is `workflow:<name>`.
    pub name: String,
    /// The opportunity event type it reacts to, one of [`OPPORTUNITY_EVENTS`].
    pub on: String,
    pub when: Condition,
    /// At least one; applied in the order schedule, move, complete, cancel.
    pub actions: Vec<Action>,
}

/// A rule's condition. Every present list must contain the deal's (or the event's) value; an
/// absent list accepts anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// The deal's current stage when the workflow reacts.
    pub stage: Option<Vec<StageName>>,
    /// `ActivityLogged` only: the activity's kind.
    pub activity_kind: Option<Vec<ActivityKind>>,
    /// `StageChanged` only: the stage moved from.
    pub from_stage: Option<Vec<StageName>>,
    /// `StageChanged` only: the stage moved to.
    pub to_stage: Option<Vec<StageName>>,
    /// `OpportunityClosed` only.
    pub outcome: Option<Vec<Outcome>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new follow-up of `kind`, due `after` the triggering event was recorded.
    ScheduleFollowUp {
        kind: FollowUpKind,
        after: TimeDelta,
    },
    MoveToStage(StageName),
    /// Completes the deal's open or due follow-ups of these kinds.
    CompleteFollowUps(FollowUpSelection),
    /// Cancels the deal's open or due follow-ups of these kinds.
    CancelFollowUps(FollowUpSelection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUpSelection {
    All,
    Kinds(Vec<FollowUpKind>),
}

impl FollowUpSelection {
    pub fn includes(&self, kind: &FollowUpKind) -> bool {
        match self {
            FollowUpSelection::All => true,
            FollowUpSelection::Kinds(kinds) => kinds.contains(kind),
        }
    }
}

/// Reminders that have no scheduled follow-up behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reminders {
    /// `stale-deal` after this long without activity; `None` turns it off.
    pub stale_after: Option<TimeDelta>,
    /// `close-date-passed` once an open deal's expected close date is over.
    pub close_date_passed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Owner of a lead no rule matches.
    pub default_owner: Owner,
    /// Tried in order; the first match assigns.
    pub rules: Vec<RoutingRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRule {
    /// A lower-case slug, unique among routing rules; also the key of its round-robin counter.
    pub name: String,
    pub when: RoutingCondition,
    pub assign: Assignment,
}

/// Field matches on the captured lead; every present list must contain the lead's value, and a
/// lead without the field does not match a list on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingCondition {
    pub country: Option<Vec<Country>>,
    /// Compared without regard to case: sources are free text typed by people.
    pub source: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Owners take turns, in this order, across restarts and instances.
    RoundRobin(Vec<Owner>),
    Owner(Owner),
}

/// Reads the rules file at `path`, or the built-in defaults when `path` is `None`.
pub fn load_config(path: Option<&Path>) -> Result<WorkflowConfig, ConfigError> {
    let Some(path) = path else {
        return parse(DEFAULT_RULES, None);
    };
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        path: Some(path.to_owned()),
        line: None,
        column: None,
        problem: format!("cannot read the rules file: {error}"),
    })?;
    parse(&text, Some(path))
}

/// Parses a rules file's text; `path` only names it in errors.
pub fn parse(text: &str, path: Option<&Path>) -> Result<WorkflowConfig, ConfigError> {
    let located = Locator { text, path };
    let raw: RawFile = toml::from_str(text).map_err(|error| {
        located.error(
            error.span(),
            error.message().trim_end_matches('\n').to_owned(),
        )
    })?;
    validate(raw, &located)
}

struct Locator<'a> {
    text: &'a str,
    path: Option<&'a Path>,
}

impl Locator<'_> {
    fn error(&self, span: Option<Range<usize>>, problem: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let start = span.start.min(self.text.len());
                let before = &self.text[..start];
                let line = before.matches('\n').count() + 1;
                let column = before
                    .rfind('\n')
                    .map_or(before.chars().count(), |newline| {
                        before[newline + 1..].chars().count()
                    })
                    + 1;
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            path: self.path.map(Path::to_owned),
            line,
            column,
            problem: problem.into(),
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, problem: impl Into<String>) -> ConfigError {
        self.error(Some(spanned.span()), problem)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    workflow: RawWorkflow,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    forecast: RawForecast,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForecast {
    prior_weight: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    reminders: Option<RawReminders>,
    timer_retention: Option<Spanned<String>>,
    horizon: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    on: Spanned<String>,
    when: Option<RawWhen>,
    schedule_follow_up: Option<RawSchedule>,
    move_to_stage: Option<Spanned<String>>,
    complete_follow_ups: Option<Spanned<toml::Value>>,
    cancel_follow_ups: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    stage: Option<Vec<Spanned<String>>>,
    activity_kind: Option<Spanned<Vec<Spanned<String>>>>,
    from_stage: Option<Spanned<Vec<Spanned<String>>>>,
    to_stage: Option<Spanned<Vec<Spanned<String>>>>,
    outcome: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    kind: Spanned<String>,
    after: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReminders {
    stale_after: Option<Spanned<toml::Value>>,
    #[serde(default)]
    close_date_passed: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    default_owner: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRoutingRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutingRule {
    name: Spanned<String>,
    when: Option<RawRoutingWhen>,
    round_robin: Option<Spanned<Vec<Spanned<String>>>>,
    owner: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutingWhen {
    country: Option<Vec<Spanned<String>>>,
    source: Option<Vec<Spanned<String>>>,
}

fn validate(raw: RawFile, at: &Locator<'_>) -> Result<WorkflowConfig, ConfigError> {
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.workflow.rules.len());
    for spanned in &raw.workflow.rules {
        let rule = validate_rule(spanned, at)?;
        if !names.insert(rule.name.clone()) {
            return Err(at.at(
                &spanned.get_ref().name,
                format!("rule name {:?} is used twice", rule.name),
            ));
        }
        rules.push(rule);
    }

    let reminders = match raw.workflow.reminders {
        None => Reminders::default(),
        Some(raw) => Reminders {
            stale_after: match raw.stale_after {
                None => None,
                Some(value) => match value.get_ref() {
                    toml::Value::Boolean(false) => None,
                    toml::Value::String(text) => {
                        let duration = parse_duration(text)
                            .map_err(|problem| at.at(&value, format!("stale_after: {problem}")))?;
                        if duration <= TimeDelta::zero() {
                            return Err(at.at(&value, "stale_after must be longer than 0s"));
                        }
                        Some(duration)
                    }
                    _ => {
                        return Err(at.at(
                            &value,
                            "stale_after must be a duration such as \"14d\", or false",
                        ));
                    }
                },
            },
            close_date_passed: raw.close_date_passed,
        },
    };

    let default_owner = match &raw.routing.default_owner {
        None => fallback_owner(),
        Some(owner) => Text::parse("owner", owner.get_ref(), Text::SHORT)
            .map_err(|error| at.at(owner, format!("default_owner: {error}")))?,
    };
    let mut routing_names = HashSet::new();
    let mut routing_rules = Vec::with_capacity(raw.routing.rules.len());
    for spanned in &raw.routing.rules {
        let rule = validate_routing_rule(spanned, at)?;
        if !routing_names.insert(rule.name.clone()) {
            return Err(at.at(
                &spanned.get_ref().name,
                format!("routing rule name {:?} is used twice", rule.name),
            ));
        }
        routing_rules.push(rule);
    }

    let setting = |value: &Option<Spanned<String>>, name: &str, default: TimeDelta| match value {
        None => Ok(default),
        Some(value) => parse_duration(value.get_ref())
            .map_err(|problem| at.at(value, format!("{name}: {problem}"))),
    };
    let timer_retention = setting(
        &raw.workflow.timer_retention,
        "timer_retention",
        DEFAULT_TIMER_RETENTION,
    )?;
    let horizon = setting(&raw.workflow.horizon, "horizon", DEFAULT_HORIZON)?;
    let prior_weight = match &raw.forecast.prior_weight {
        None => DEFAULT_PRIOR_WEIGHT,
        Some(weight) => u32::try_from(*weight.get_ref())
            .ok()
            .filter(|weight| *weight <= MAX_PRIOR_WEIGHT)
            .ok_or_else(|| {
                at.at(
                    weight,
                    format!("prior_weight: must be a whole number from 0 to {MAX_PRIOR_WEIGHT}"),
                )
            })?,
    };

    Ok(WorkflowConfig {
        rules,
        reminders,
        timer_retention,
        horizon,
        prior_weight,
        routing: Routing {
            default_owner,
            rules: routing_rules,
        },
    })
}

fn rule_name(name: &Spanned<String>, at: &Locator<'_>) -> Result<String, ConfigError> {
    FollowUpKind::parse(name.get_ref())
        .map(|slug| slug.as_str().to_owned())
        .map_err(|_| {
            at.at(
                name,
                format!(
                    "rule name {:?} must be a lower-case slug (a-z, 0-9, '-', '_')",
                    name.get_ref()
                ),
            )
        })
}

fn validate_rule(spanned: &Spanned<RawRule>, at: &Locator<'_>) -> Result<Rule, ConfigError> {
    let raw = spanned.get_ref();
    let name = rule_name(&raw.name, at)?;
    let on = raw.on.get_ref();
    if !OPPORTUNITY_EVENTS.contains(&on.as_str()) {
        return Err(at.at(
            &raw.on,
            format!(
                "rule {name}: unknown event {on:?} in `on`; expected one of {}",
                OPPORTUNITY_EVENTS.join(", ")
            ),
        ));
    }

    let mut when = Condition::default();
    if let Some(raw_when) = &raw.when {
        if let Some(stages) = &raw_when.stage {
            when.stage = Some(stage_list(stages, "stage", at)?);
        }
        let only_on = |field: &str, value: &Spanned<Vec<Spanned<String>>>, event: &str| {
            if on == event {
                Ok(())
            } else {
                Err(at.at(
                    value,
                    format!("rule {name}: `when.{field}` applies only to `on = \"{event}\"`"),
                ))
            }
        };
        if let Some(kinds) = &raw_when.activity_kind {
            only_on("activity_kind", kinds, "ActivityLogged")?;
            let parsed = kinds
                .get_ref()
                .iter()
                .map(|kind| {
                    ActivityKind::parse(kind.get_ref())
                        .map_err(|error| at.at(kind, format!("rule {name}: {error}")))
                })
                .collect::<Result<_, _>>()?;
            when.activity_kind = Some(parsed);
        }
        if let Some(stages) = &raw_when.from_stage {
            only_on("from_stage", stages, "StageChanged")?;
            when.from_stage = Some(stage_list(stages.get_ref(), "from_stage", at)?);
        }
        if let Some(stages) = &raw_when.to_stage {
            only_on("to_stage", stages, "StageChanged")?;
            when.to_stage = Some(stage_list(stages.get_ref(), "to_stage", at)?);
        }
        if let Some(outcomes) = &raw_when.outcome {
            only_on("outcome", outcomes, "OpportunityClosed")?;
            let parsed = outcomes
                .get_ref()
                .iter()
                .map(|outcome| {
                    Outcome::parse(outcome.get_ref())
                        .map_err(|error| at.at(outcome, format!("rule {name}: {error}")))
                })
                .collect::<Result<_, _>>()?;
            when.outcome = Some(parsed);
        }
    }

    let mut actions = Vec::new();
    if let Some(schedule) = &raw.schedule_follow_up {
        let kind = FollowUpKind::parse(schedule.kind.get_ref())
            .map_err(|error| at.at(&schedule.kind, format!("rule {name}: {error}")))?;
        let after = parse_duration(schedule.after.get_ref())
            .map_err(|problem| at.at(&schedule.after, format!("rule {name}: after: {problem}")))?;
        actions.push(Action::ScheduleFollowUp { kind, after });
    }
    if let Some(stage) = &raw.move_to_stage {
        let stage = StageName::parse(stage.get_ref())
            .map_err(|error| at.at(stage, format!("rule {name}: move_to_stage: {error}")))?;
        actions.push(Action::MoveToStage(stage));
    }
    if let Some(selection) = &raw.complete_follow_ups {
        actions.push(Action::CompleteFollowUps(selection_of(
            selection,
            "complete_follow_ups",
            &name,
            at,
        )?));
    }
    if let Some(selection) = &raw.cancel_follow_ups {
        actions.push(Action::CancelFollowUps(selection_of(
            selection,
            "cancel_follow_ups",
            &name,
            at,
        )?));
    }
    if actions.is_empty() {
        return Err(at.at(
            spanned,
            format!(
                "rule {name} has no action; give schedule_follow_up, move_to_stage, \
                 complete_follow_ups or cancel_follow_ups"
            ),
        ));
    }
    Ok(Rule {
        name,
        on: on.clone(),
        when,
        actions,
    })
}

fn stage_list(
    stages: &[Spanned<String>],
    field: &str,
    at: &Locator<'_>,
) -> Result<Vec<StageName>, ConfigError> {
    stages
        .iter()
        .map(|stage| {
            StageName::parse(stage.get_ref())
                .map_err(|error| at.at(stage, format!("when.{field}: {error}")))
        })
        .collect()
}

fn selection_of(
    value: &Spanned<toml::Value>,
    field: &str,
    rule: &str,
    at: &Locator<'_>,
) -> Result<FollowUpSelection, ConfigError> {
    let expected = || {
        at.at(
            value,
            format!("rule {rule}: {field} must be \"all\" or a list of follow-up kinds"),
        )
    };
    match value.get_ref() {
        toml::Value::String(text) if text == "all" => Ok(FollowUpSelection::All),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .and_then(|kind| FollowUpKind::parse(kind).ok())
                    .ok_or_else(expected)
            })
            .collect::<Result<_, _>>()
            .map(FollowUpSelection::Kinds),
        _ => Err(expected()),
    }
}

fn validate_routing_rule(
    spanned: &Spanned<RawRoutingRule>,
    at: &Locator<'_>,
) -> Result<RoutingRule, ConfigError> {
    let raw = spanned.get_ref();
    let name = rule_name(&raw.name, at)?;
    let mut when = RoutingCondition::default();
    if let Some(raw_when) = &raw.when {
        if let Some(countries) = &raw_when.country {
            let parsed = countries
                .iter()
                .map(|country| {
                    Country::parse(country.get_ref())
                        .map_err(|error| at.at(country, format!("routing rule {name}: {error}")))
                })
                .collect::<Result<_, _>>()?;
            when.country = Some(parsed);
        }
        if let Some(sources) = &raw_when.source {
            when.source = Some(
                sources
                    .iter()
                    .map(|source| source.get_ref().trim().to_lowercase())
                    .collect(),
            );
        }
    }
    let owner_of = |owner: &Spanned<String>| {
        Text::parse("owner", owner.get_ref(), Text::SHORT)
            .map_err(|error| at.at(owner, format!("routing rule {name}: {error}")))
    };
    let assign = match (&raw.round_robin, &raw.owner) {
        (Some(team), None) => {
            if team.get_ref().is_empty() {
                return Err(at.at(
                    team,
                    format!("routing rule {name}: round_robin needs at least one owner"),
                ));
            }
            Assignment::RoundRobin(
                team.get_ref()
                    .iter()
                    .map(owner_of)
                    .collect::<Result<_, _>>()?,
            )
        }
        (None, Some(owner)) => Assignment::Owner(owner_of(owner)?),
        _ => {
            return Err(at.at(
                spanned,
                format!("routing rule {name} needs exactly one of round_robin or owner"),
            ));
        }
    };
    Ok(RoutingRule { name, when, assign })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let config = parse(DEFAULT_RULES, None).expect("the built-in rules parse");
        assert_eq!(config.rules.len(), 5);
        assert_eq!(config.reminders.stale_after, Some(TimeDelta::days(14)));
        assert!(config.reminders.close_date_passed);
        assert_eq!(config.routing.default_owner.as_str(), "unassigned");
        assert_eq!(config.timer_retention, DEFAULT_TIMER_RETENTION);
        assert_eq!(config.horizon, DEFAULT_HORIZON);
        assert_eq!(config, WorkflowConfig::default());
    }

    #[test]
    fn the_prior_weight_is_a_whole_number_of_the_forecast_section() {
        assert_eq!(parse("", None).expect("no file").prior_weight, 5);
        let config = parse("[forecast]\nprior_weight = 12\n", None).expect("a weight");
        assert_eq!(config.prior_weight, 12);
        let refused = parse("[forecast]\nprior_weight = -1\n", None).unwrap_err();
        assert!(refused.problem.starts_with("prior_weight: "), "{refused}");
    }

    #[test]
    fn the_horizon_is_a_duration_of_the_workflow_section() {
        let config = parse("[workflow]\nhorizon = \"36h\"\n", None).expect("a horizon");
        assert_eq!(config.horizon, TimeDelta::hours(36));
        let never = parse("[workflow]\nhorizon = \"0s\"\n", None).expect("no horizon at all");
        assert_eq!(never.horizon, TimeDelta::zero());
        let refused = parse("[workflow]\nhorizon = \"a week\"\n", None).unwrap_err();
        assert_eq!(refused.line, Some(2));
        assert!(refused.problem.starts_with("horizon: "), "{refused}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(TimeDelta::seconds(90)));
        assert_eq!(parse_duration("15m"), Ok(TimeDelta::minutes(15)));
        assert_eq!(parse_duration("36h"), Ok(TimeDelta::hours(36)));
        assert_eq!(parse_duration("3d"), Ok(TimeDelta::days(3)));
        for bad in [
            "",
            "3",
            "d",
            "3w",
            "-3d",
            "3 d",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
