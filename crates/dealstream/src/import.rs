//! `dealstream import FILE`: history exported from another system, loaded with its original dates
//! through the same deciders as the API (the format is in docs/import.md).
//!
//! Each line is one command, `{"occurred_at", "actor", "command", "id", "body"}`. The body is read
//! by the API's own conversion (`api::imported`), so a line is accepted exactly when the same
//! request would be. The command id is a UUID v5 of the line's canonical JSON, which makes every
//! line repeatable: importing a file twice answers each line from the store's record of handled
//! commands and appends nothing. Ids the line does not give (an activity's) derive from that
//! command id too, so the same file always writes the same events.
//!
//! A refused line is reported as `line N: <reason>` and the rest go on; a command is atomic in the
//! store, so nothing of a refused line is written. Failures of the store itself are no refusal:
//! they are retried for a while, then stop the import.

use std::collections::{HashSet, VecDeque};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use api::{ApiError, Fresh};
use chrono::{DateTime, Utc};
use commands::{CommandContext, CommandError, CommandHandler};
use domain::values::{Owner, Text, parse_instant};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The JSON Lines file to load.
    file: PathBuf,
    /// Stop at the first refused line instead of going on with the rest.
    #[arg(long)]
    strict: bool,
}

/// Namespace of the command ids derived from import lines.
const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x5d0b_7c3e_2f41_4a8e_b6d2_93e1_0c7a_4f15);

/// The prefix of every imported event's actor: `import:<the line's actor>`. It keeps imported
/// history apart from what was done in dealstream (`api:`, `workflow:`) in every deal's audit
/// trail, and a line cannot pass itself off as the workflow.
pub const ACTOR_PREFIX: &str = "import:";

/// How many lines may be in the store's hands at once.
const IN_FLIGHT: usize = 64;

/// How many lines are read ahead, so that lines of other deals can go past one that waits for an
/// earlier line of its own deal. Bounds the memory an import takes, whatever the file's size.
const READ_AHEAD: usize = 512;

/// How long a line waits for an unavailable store before the import gives up.
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(30);

/// The members of a line, all required; any other member is refused, as in a request body.
const MEMBERS: [&str; 5] = ["occurred_at", "actor", "command", "id", "body"];

/// One line of the file.
struct Line {
    occurred_at: String,
    actor: String,
    command: String,
    id: String,
    body: Value,
}

impl Line {
    fn read(json: Value) -> Result<Line, String> {
        let Value::Object(mut members) = json else {
            return Err("a line must be a JSON object".to_owned());
        };
        if let Some(unknown) = members
            .keys()
            .find(|name| !MEMBERS.contains(&name.as_str()))
        {
            return Err(format!(
                "unknown member `{unknown}`, expected {}",
                MEMBERS.join(", ")
            ));
        }
        let mut text = |name: &str| match members.remove(name) {
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err(format!("{name}: must be a string")),
            None => Err(format!("missing member `{name}`")),
        };
        Ok(Line {
            occurred_at: text("occurred_at")?,
            actor: text("actor")?,
            command: text("command")?,
            id: text("id")?,
            body: members
                .remove("body")
                .ok_or_else(|| "missing member `body`".to_owned())?,
        })
    }
}

/// Sends import lines through the command handler.
pub struct Importer<'a> {
    pub handler: &'a CommandHandler,
    /// Owns a deal qualified from a lead that was never routed, when the line names no owner
    /// (the API's default owner, from the rules file).
    pub default_owner: Owner,
}

impl Importer<'_> {
    /// Sends one line's command. `Ok(Err(reason))` is a refusal of the line; `Err` a failure of
    /// the store that no line can be blamed for.
    async fn send(
        &self,
        command: api::Command,
        context: &CommandContext,
    ) -> anyhow::Result<Result<(), String>> {
        let started = std::time::Instant::now();
        loop {
            match command
                .clone()
                .send(self.handler, context, &self.default_owner)
                .await
            {
                Ok(_) => return Ok(Ok(())),
                Err(CommandError::Unavailable(_)) if started.elapsed() < UNAVAILABLE_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(
                    refused @ (CommandError::Rejected(_)
                    | CommandError::Conflict { .. }
                    | CommandError::IdempotencyKeyReused),
                ) => return Ok(Err(reason(ApiError::from(refused)))),
                Err(failure) => return Err(failure).context("the event store failed"),
            }
        }
    }
}

/// What a command touches, for running lines side by side: lines on the same lead or deal run
/// one after the other, in file order, so each stream sees its lines in order (and business
/// time never goes back within it). A pipeline definition changes what stage changes and new
/// deals everywhere may do, so it runs alone, after everything before it and before anything
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Entities(Vec<Uuid>),
    Everything,
}

impl Scope {
    fn of(command: &api::Command) -> Scope {
        use api::Command::*;
        match command {
            CaptureLead { id, .. } | DisqualifyLead { id, .. } => Scope::Entities(vec![id.0]),
            QualifyLead {
                id, opportunity_id, ..
            } => Scope::Entities(vec![id.0, opportunity_id.0]),
            CreateOpportunity { id, .. } | Opportunity { id, .. } => Scope::Entities(vec![id.0]),
            DefinePipeline { .. } => Scope::Everything,
        }
    }
}

/// The scopes of the lines running now.
#[derive(Default)]
struct Running {
    entities: HashSet<Uuid>,
    everything: bool,
    lines: usize,
}

impl Running {
    fn admits(&self, scope: &Scope) -> bool {
        match scope {
            _ if self.everything => false,
            Scope::Everything => self.lines == 0,
            Scope::Entities(ids) => ids.iter().all(|id| !self.entities.contains(id)),
        }
    }

    fn start(&mut self, scope: &Scope) {
        self.lines += 1;
        match scope {
            Scope::Everything => self.everything = true,
            Scope::Entities(ids) => self.entities.extend(ids),
        }
    }

    fn finish(&mut self, scope: &Scope) {
        self.lines -= 1;
        match scope {
            Scope::Everything => self.everything = false,
            Scope::Entities(ids) => {
                for id in ids {
                    self.entities.remove(id);
                }
            }
        }
    }
}

/// A line read into its command and context, or the reason it cannot be one.
type Parsed = Result<(api::Command, CommandContext), String>;

/// Reads a line into its command and context, or says why it cannot be one.
fn parse(text: &str) -> Parsed {
    let json: Value =
        serde_json::from_str(text).map_err(|error| format!("malformed JSON: {error}"))?;
    // serde_json keeps object members sorted, so the same line with other spacing or member order
    // is the same command.
    let canonical = json.to_string();
    let line = Line::read(json)?;
    let occurred_at = parse_instant("occurred_at", &line.occurred_at).map_err(invalid)?;
    let actor = Text::parse("actor", &line.actor, Text::SHORT).map_err(invalid)?;
    let command_id = Uuid::new_v5(&IMPORT_NAMESPACE, canonical.as_bytes());
    let fresh = Fresh {
        now: occurred_at,
        id: derived_id(command_id, occurred_at),
    };
    let command = api::imported(&line.command, &line.id, line.body, &fresh).map_err(reason)?;
    let context = CommandContext {
        actor: format!("{ACTOR_PREFIX}{actor}"),
        command_id,
        correlation_id: command_id,
        causation_id: command_id,
        repeatable: true,
        fingerprint: None,
        expected_version: None,
        occurred_at: Some(occurred_at),
        token_id: None,
    };
    Ok((command, context))
}

/// A UUID v7 for what a line creates without naming it: time ordered by the line's business
/// time like every other id, and the same on every import of the line.
fn derived_id(command_id: Uuid, occurred_at: DateTime<Utc>) -> Uuid {
    let mut tail = [0; 10];
    tail.copy_from_slice(&command_id.as_bytes()[6..]);
    uuid_v7_at(occurred_at, tail)
}

/// A UUID v7 of the instant `at` whose other bits are `tail` rather than random ones, so that
/// history written again gets the same ids.
pub fn uuid_v7_at(at: DateTime<Utc>, tail: [u8; 10]) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
}

fn invalid(error: domain::values::InvalidValue) -> String {
    reason(ApiError::from(error))
}

/// The reason of a refusal, as the API's problem detail says it, with the rule it broke.
fn reason(error: ApiError) -> String {
    match error {
        ApiError::Unprocessable { rule, detail } => format!("{rule}: {detail}"),
        ApiError::NotFound(detail) => format!("not-found: {detail}"),
        ApiError::Conflict(detail) => format!("conflict: {detail}"),
        other => other.to_string(),
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines read (blank lines are not counted).
    pub lines: usize,
    /// `(line number, reason)` of each refused line, in file order.
    pub refused: Vec<(usize, String)>,
    /// How many events the store gained meanwhile.
    pub events_appended: i64,
}

/// Imports every line of `reader`, reporting refusals through `report_refusal` as they are
/// known. `on_progress` gets the bytes read so far.
///
/// Up to [`IN_FLIGHT`] lines run at once, which lets the store commit many lines in one
/// transaction, as it does for concurrent requests. Lines that touch the same lead or deal still
/// run in file order ([`Scope`]): a line that must wait for an earlier one waits aside, among the
/// next [`READ_AHEAD`] lines, while later lines of other deals go ahead. With `strict`, lines run
/// one at a time and the import stops at the first refusal, so nothing after it is written.
pub async fn import(
    importer: &Importer<'_>,
    reader: impl BufRead,
    strict: bool,
    mut on_progress: impl FnMut(u64),
    mut report_refusal: impl FnMut(usize, &str),
) -> anyhow::Result<Report> {
    let (in_flight, read_ahead) = if strict {
        (1, 1)
    } else {
        (IN_FLIGHT, READ_AHEAD)
    };
    let head_before = importer.handler.store().head_position().await?;
    let mut report = Report::default();
    let mut lines = Lines {
        reader,
        bytes: Vec::new(),
        bytes_read: 0,
        number: 0,
    };
    let mut exhausted = false;
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut running = Running::default();
    let mut sent = FuturesUnordered::new();
    let mut refuse = |report: &mut Report, number: usize, refusal: String| {
        report_refusal(number, &refusal);
        report.refused.push((number, refusal));
    };
    loop {
        let stops = |report: &Report| strict && !report.refused.is_empty();
        while !exhausted && !stops(&report) && waiting.len() < read_ahead {
            let Some((number, parsed)) = lines.next()? else {
                exhausted = true;
                break;
            };
            report.lines += 1;
            on_progress(lines.bytes_read);
            match parsed {
                Ok((command, context)) => waiting.push_back(Pending {
                    number,
                    scope: Scope::of(&command),
                    command,
                    context,
                }),
                Err(refusal) => refuse(&mut report, number, refusal),
            }
        }
        let stopped = stops(&report);
        if stopped {
            waiting.clear();
        }
        // Start every waiting line that may run: nothing running shares its scope, and no
        // earlier waiting line does (those go first).
        let mut earlier = Running::default();
        let mut index = 0;
        while index < waiting.len() && sent.len() < in_flight {
            let scope = &waiting[index].scope;
            if !(running.admits(scope) && earlier.admits(scope)) {
                earlier.start(scope);
                index += 1;
                continue;
            }
            let Some(pending) = waiting.remove(index) else {
                break;
            };
            running.start(&pending.scope);
            sent.push(async move {
                let outcome = importer.send(pending.command, &pending.context).await;
                (pending.number, pending.scope, outcome)
            });
        }
        match sent.next().await {
            Some((number, scope, outcome)) => {
                running.finish(&scope);
                if let Err(refusal) = outcome? {
                    refuse(&mut report, number, refusal);
                }
            }
            // Nothing running means nothing waits either: the first waiting line always starts.
            None if exhausted || stopped => break,
            None => {}
        }
    }
    report.refused.sort_by_key(|(number, _)| *number);
    report.events_appended = importer.handler.store().head_position().await? - head_before;
    Ok(report)
}

/// A parsed line waiting for its turn.
struct Pending {
    number: usize,
    scope: Scope,
    command: api::Command,
    context: CommandContext,
}

/// The lines of the file, numbered from 1, each parsed or refused.
struct Lines<R> {
    reader: R,
    bytes: Vec<u8>,
    bytes_read: u64,
    number: usize,
}

impl<R: BufRead> Lines<R> {
    /// The next line that is not blank, with its number, or `None` at the end of the file.
    fn next(&mut self) -> anyhow::Result<Option<(usize, Parsed)>> {
        loop {
            self.bytes.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.bytes)
                .context("could not read the import file")?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            self.bytes_read += read as u64;
            let parsed = match std::str::from_utf8(&self.bytes) {
                Ok(text) if text.trim().is_empty() => continue,
                // Without its line break, so that a truncated line reads as what it is, cut
                // short.
                Ok(text) => parse(text.trim_end_matches(['\n', '\r'])),
                Err(error) => Err(format!("not UTF-8: {error}")),
            };
            return Ok(Some((self.number, parsed)));
        }
    }
}

/// `dealstream import FILE`: a progress bar on a terminal, refusals on standard error, a summary
/// on standard output; an error (exit 1) if any line was refused.
pub async fn run(importer: &Importer<'_>, arguments: &ImportArgs) -> anyhow::Result<()> {
    let path = &arguments.file;
    let file =
        std::fs::File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if on_terminal {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("import [{bar:40}] {bytes}/{total_bytes}, {eta} left")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let report = import(
        importer,
        std::io::BufReader::new(file),
        arguments.strict,
        |bytes| bar.set_position(bytes),
        |number, refusal| bar.suspend(|| eprintln!("line {number}: {refusal}")),
    )
    .await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "import: {} lines, {} refused, {} events appended in {seconds:.1}s ({:.0} events/s)",
        report.lines,
        report.refused.len(),
        report.events_appended,
        report.events_appended as f64 / seconds.max(f64::EPSILON),
    );
    match report.refused.first() {
        None => Ok(()),
        Some((number, _)) if arguments.strict => {
            bail!("stopped at line {number}, the first refused line (--strict)")
        }
        Some(_) => bail!("{} of {} lines refused", report.refused.len(), report.lines),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, NaiveDate, Utc};
    use commands::{CommandHandler, SystemClock};
    use domain::lead::LeadStatus;
    use domain::opportunity::OpportunityStatus;
    use domain::values::{LeadId, OpportunityId, parse_owner};
    use testkit::TestDb;
    use uuid::Uuid;

    use super::{ImportArgs, Importer, Report, import, run};

    /// The example of docs/import.md, which this test folds by hand.
    const EXAMPLE: &str = include_str!("../../../docs/examples/import.jsonl");
    const ACME_LEAD: &str = "01944034-f500-7f12-a29b-915012567327";
    const ACME_DEAL: &str = "01944b78-de40-73f6-a732-d8c5534bf73b";
    const GLOBEX_LEAD: &str = "0194f4aa-7780-7e60-b2dc-f07702927650";
    const INITECH_DEAL: &str = "019503af-ae80-7e1e-a2be-c60e6a5a3b2c";

    async fn handler(database: &TestDb) -> CommandHandler {
        let handler = CommandHandler::new(database.store(), Arc::new(SystemClock));
        handler.ensure_default_pipeline().await.unwrap();
        handler
    }

    async fn import_text(handler: &CommandHandler, text: &str, strict: bool) -> Report {
        let importer = Importer {
            handler,
            default_owner: parse_owner("unassigned").unwrap(),
        };
        import(&importer, text.as_bytes(), strict, |_| {}, |_, _| {})
            .await
            .unwrap()
    }

    fn instant(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn deal(id: &str) -> OpportunityId {
        OpportunityId(Uuid::parse_str(id).unwrap())
    }

    fn lead(id: &str) -> LeadId {
        LeadId(Uuid::parse_str(id).unwrap())
    }

    #[tokio::test]
    async fn the_example_file_folds_to_what_its_lines_say() {
        let database = TestDb::new().await;
        let handler = handler(&database).await;

        let report = import_text(&handler, EXAMPLE, false).await;

        assert_eq!(report.lines, 20);
        assert_eq!(report.refused, []);
        // enterprise pipeline 1, Acme lead 3, Globex lead 2, Acme deal 12, Initech deal 4.
        assert_eq!(report.events_appended, 22);

        let acme = handler.load_opportunity(deal(ACME_DEAL)).await.unwrap();
        let acme = acme.state.unwrap();
        assert_eq!(acme.status, OpportunityStatus::Won);
        assert_eq!(acme.stage.as_str(), "negotiation");
        assert_eq!(acme.amount.minor_units(), 5_200_000);
        assert_eq!(acme.currency.as_str(), "EUR");
        assert_eq!(
            acme.expected_close_date,
            NaiveDate::from_ymd_opt(2025, 4, 30).unwrap()
        );
        assert_eq!(acme.owner.as_str(), "anna");
        assert_eq!(acme.closed_at, Some(instant("2025-04-28T17:00:00Z")));
        assert_eq!(
            acme.probability_override, None,
            "the stage change cleared it"
        );
        assert_eq!(acme.lead_id, Some(lead(ACME_LEAD)));

        let initech = handler.load_opportunity(deal(INITECH_DEAL)).await.unwrap();
        let initech = initech.state.unwrap();
        assert_eq!(initech.status, OpportunityStatus::Open);
        assert_eq!(initech.pipeline.as_str(), "enterprise");
        assert_eq!(initech.stage.as_str(), "proposal");
        assert_eq!(initech.probability().percent(), 40);
        assert_eq!(initech.owner.as_str(), "dmitri");

        let acme_lead = handler.load_lead(lead(ACME_LEAD)).await.unwrap().state;
        assert_eq!(acme_lead.unwrap().opportunity_id, Some(deal(ACME_DEAL)));
        let globex = handler.load_lead(lead(GLOBEX_LEAD)).await.unwrap().state;
        assert_eq!(globex.unwrap().status, LeadStatus::Disqualified);

        let events = handler
            .store()
            .read_stream(&deal(ACME_DEAL).stream_id())
            .await
            .unwrap();
        let facts: Vec<(&str, String)> = events
            .iter()
            .map(|event| {
                let at = event
                    .occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                (event.event_type.as_str(), at)
            })
            .collect();
        let expected = [
            ("OpportunityCreated", "2025-01-09T14:30:00Z"),
            ("ActivityLogged", "2025-01-10T09:15:00Z"),
            ("StageChanged", "2025-01-10T09:20:00Z"),
            ("FollowUpScheduled", "2025-01-10T09:25:00Z"),
            ("FollowUpCompleted", "2025-01-17T11:00:00Z"),
            ("ActivityLogged", "2025-01-20T16:00:00Z"),
            ("StageChanged", "2025-01-20T16:05:00Z"),
            ("AmountChanged", "2025-02-03T10:00:00Z"),
            ("CloseDateChanged", "2025-03-25T10:00:00Z"),
            ("ProbabilityOverridden", "2025-03-25T10:05:00Z"),
            ("StageChanged", "2025-04-02T09:00:00Z"),
            ("OpportunityClosed", "2025-04-28T17:00:00Z"),
        ];
        let expected: Vec<(&str, String)> = expected
            .iter()
            .map(|(kind, at)| (*kind, (*at).to_owned()))
            .collect();
        assert_eq!(facts, expected);
        for event in &events {
            assert_eq!(event.metadata["actor"], "import:anna");
            assert!(event.occurred_at < event.recorded_at);
        }
        // An activity's time is the line's unless its body says otherwise.
        assert_eq!(events[1].data["occurred_at"], "2025-01-10T09:15:00Z");
        assert_eq!(events[5].data["occurred_at"], "2025-01-20T15:00:00Z");
        assert_eq!(events[3].data["rule"], "import");
        assert_eq!(events[11].data["closed_at"], "2025-04-28T17:00:00Z");
    }

    #[tokio::test]
    async fn importing_a_file_twice_appends_nothing_the_second_time() {
        let database = TestDb::new().await;
        let handler = handler(&database).await;
        let first = import_text(&handler, EXAMPLE, false).await;
        let head = handler.store().head_position().await.unwrap();

        // The same lines, with their members in another order: still the same commands.
        let reordered: String = EXAMPLE
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                format!("{value}\n")
            })
            .collect();
        assert_ne!(reordered, EXAMPLE);
        let second = import_text(&handler, &reordered, false).await;

        assert_eq!(first.events_appended, 22);
        assert_eq!(second.lines, first.lines);
        assert_eq!(second.refused, []);
        assert_eq!(second.events_appended, 0);
        assert_eq!(handler.store().head_position().await.unwrap(), head);
    }

    /// Lines of a lead captured at 2025-03-01, each refused for its own reason.
    fn refused_lines() -> (String, Vec<(usize, &'static str)>) {
        let (kept, other) = (Uuid::now_v7(), Uuid::now_v7());
        let (new_deal, third) = (Uuid::now_v7(), Uuid::now_v7());
        let lines = [
            format!(
                r#"{{"occurred_at":"2025-03-01T10:00:00Z","actor":"anna","command":"capture_lead","id":"{kept}","body":{{"name":"Ada"}}}}"#
            ),
            format!(
                r#"{{"occurred_at":"2025-03-01T11:00:00Z","actor":"anna","command":"merge_leads","id":"{kept}","body":{{}}}}"#
            ),
            format!(
                r#"{{"occurred_at":"2025-03-01T12:00:00Z","actor":"anna","command":"capture_lead","id":"{other}","body":{{"name":"Ben","currency":"EUR"}}}}"#
            ),
            format!(
                r#"{{"occurred_at":"2025-03-01T12:00:00Z","actor":"anna","command":"capture_lead","id":"{third}","body":{{"name":"Carla","country":"Germany"}}}}"#
            ),
            format!(
                r#"{{"occurred_at":"2025-03-02T10:00:00Z","actor":"anna","command":"qualify_lead","id":"{kept}","body":{{"criteria":{{"budget":true,"authority":true,"need":true,"timeline":true}},"opportunity":{{"id":"{new_deal}","name":"Ada deal","amount":100,"currency":"EUR","expected_close_date":"2025-06-30","pipeline":"nowhere"}}}}}}"#
            ),
            String::new(),
            format!(
                r#"{{"occurred_at":"2025-02-01T10:00:00Z","actor":"anna","command":"disqualify_lead","id":"{kept}","body":{{"reason":"too early"}}}}"#
            ),
            format!(
                r#"{{"occurred_at":"2999-01-01T10:00:00Z","actor":"anna","command":"disqualify_lead","id":"{kept}","body":{{"reason":"too late"}}}}"#
            ),
            r#"{"occurred_at":"2025-03-03T10:00:00Z","actor":"anna","comm"#.to_owned(),
        ];
        let expected = vec![
            (2, "unknown command \"merge_leads\""),
            (3, "unknown field `currency`"),
            (4, "invalid-value: "),
            (5, "pipeline-not-found: "),
            (7, "occurred-at-before-last-event: "),
            (8, "occurred-at-in-the-future: "),
            (9, "malformed JSON: EOF while parsing"),
        ];
        (lines.join("\n"), expected)
    }

    #[tokio::test]
    async fn refused_lines_are_reported_by_number_and_write_nothing() {
        let database = TestDb::new().await;
        let handler = handler(&database).await;
        let (text, expected) = refused_lines();

        let report = import_text(&handler, &text, false).await;

        let numbers: Vec<usize> = report.refused.iter().map(|(number, _)| *number).collect();
        let expected_numbers: Vec<usize> = expected.iter().map(|(number, _)| *number).collect();
        assert_eq!(numbers, expected_numbers, "{:#?}", report.refused);
        for ((_, reason), (number, start)) in report.refused.iter().zip(&expected) {
            assert!(reason.contains(start), "line {number}: {reason}");
        }
        assert_eq!(report.lines, 8, "the blank line is no line of history");
        // Only the first line's capture: the refused qualification wrote neither its lead's
        // events nor its deal.
        assert_eq!(report.events_appended, 1);
    }

    #[tokio::test]
    async fn strict_stops_at_the_first_refusal_and_the_command_fails() {
        let database = TestDb::new().await;
        let handler = handler(&database).await;
        let (text, _) = refused_lines();

        let report = import_text(&handler, &text, true).await;

        assert_eq!(report.refused.len(), 1);
        assert_eq!(report.refused[0].0, 2);
        assert_eq!(report.lines, 2);
        assert_eq!(report.events_appended, 1);

        // `dealstream import` fails (exit 1) when a line was refused, with or without --strict,
        // and succeeds on a clean file.
        let importer = Importer {
            handler: &handler,
            default_owner: parse_owner("unassigned").unwrap(),
        };
        let directory = std::env::temp_dir().join(format!("dealstream-import-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&directory).unwrap();
        let (refusing, clean) = (
            directory.join("refusing.jsonl"),
            directory.join("clean.jsonl"),
        );
        std::fs::write(&refusing, &text).unwrap();
        std::fs::write(&clean, EXAMPLE).unwrap();
        for strict in [false, true] {
            let arguments = ImportArgs {
                file: refusing.clone(),
                strict,
            };
            let failed = run(&importer, &arguments).await.unwrap_err();
            assert!(format!("{failed:#}").contains("refused"), "{failed:#}");
        }
        let arguments = ImportArgs {
            file: clean,
            strict: true,
        };
        run(&importer, &arguments).await.unwrap();
        std::fs::remove_dir_all(directory).unwrap();
    }
}
