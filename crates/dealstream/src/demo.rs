//! `dealstream demo`: a realistic history of the past `--months` months (default 18), written
//! through the import path (`import::Importer`), so every event passes the same rules as a
//! request, carries its business time in `occurred_at`, and the forecasting features have
//! something true to show.
//!
//! The history is a pure function of the seed, the number of leads and months, and the day it
//! ends on (today, at 00:00 UTC): the same arguments on the same day write the same events, ids
//! included. Leads arrive evenly over the period; each is qualified, disqualified or left alone,
//! and each deal walks the default pipeline's stages with **known win propensities** that a
//! calibration check can compare against (docs/import.md repeats them):
//!
//! P(won | the deal reached stage S, owner o, source s) = `BASE_WIN[S]` × `OWNER_FACTOR[o]` ×
//! `SOURCE_FACTOR[s]`, counting each deal's final outcome.
//!
//! The walk realises exactly that: a deal in stage S moves on with probability
//! `BASE_WIN[S] / BASE_WIN[S + 1]` and is lost otherwise, and a deal in `negotiation` is won with
//! probability `BASE_WIN[negotiation]` × the owner's and the source's factors. Sales cycles last
//! three to six months: each stage takes about its share of the time to the expected close date,
//! and the outcome is decided on that date. On the way, a quarter of the deals in negotiation
//! slip (their expected close date moves 2 to 6 weeks later shortly before it), some are closed
//! lost by mistake and reopened in their stage days later, some lost ones come back weeks later
//! and are lost again, and amounts and probabilities are revised. Deals still open at the end are
//! the pipeline of today.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Months, NaiveDate, NaiveTime, SecondsFormat, TimeDelta, Utc};
use commands::CommandHandler;
use domain::opportunity::OpportunityStatus;
use domain::values::{LeadId, OpportunityId};
use projector::rules::{ForecastFigures, Granularity, ReadModel, accumulate};
use serde_json::{Value, json};

use crate::import::{Importer, import, uuid_v7_at};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// How many leads to capture over the whole history.
    // Enough deals that a quarter's wins are not a handful, so that a backtest of the history
    // measures the forecast rather than chance.
    #[arg(long, default_value_t = 1500)]
    leads: u32,
    /// How many months of history, ending today.
    #[arg(long, default_value_t = 18)]
    months: u32,
    /// Seed of the pseudo-random history; the same seed on the same day gives the same history.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write the history's import lines to this file instead of loading them (the store is not
    /// touched); `dealstream import FILE` loads them.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Ben", "Carla", "David", "Elif", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Keiko",
    "Luis",
];
const LAST_NAMES: [&str; 10] = [
    "Schmidt", "Martin", "Smith", "Rossi", "Jansen", "Garcia", "Nilsson", "Dubois", "Brown",
    "Weber",
];
const COMPANIES: [&str; 12] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
];
const COUNTRIES: [&str; 8] = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "SE"];
const LOSS_REASONS: [&str; 4] = [
    "chose a competitor",
    "no budget this year",
    "project cancelled",
    "went silent",
];

/// The default pipeline's stages, in order.
pub const STAGES: [&str; 4] = ["new", "contacted", "quoted", "negotiation"];

/// P(won | the deal reached the stage), before the owner's and the source's factors, in the
/// order of [`STAGES`]. Increasing, so that moving on from a stage is a probability.
pub const BASE_WIN: [f64; 4] = [0.20, 0.28, 0.36, 0.45];

/// The chance that a deal in negotiation slips: its expected close date moves weeks later
/// shortly before the decision.
const SLIP_CHANCE: f64 = 0.25;

/// Each owner's factor on the win propensity (a deal's owner from its creation; the demo never
/// changes owners).
pub const OWNER_FACTOR: [(&str, f64); 6] = [
    ("anna", 1.15),
    ("bruno", 1.0),
    ("chloe", 0.9),
    ("dmitri", 1.05),
    ("emma", 0.8),
    ("farid", 1.0),
];

/// Each lead source's factor on the win propensity.
pub const SOURCE_FACTOR: [(&str, f64); 5] = [
    ("referral", 1.25),
    ("partner", 1.1),
    ("event", 1.0),
    ("web", 0.9),
    ("outbound", 0.7),
];

/// The chance that a deal in stage `stage` (an index of [`STAGES`]) is won in the end, given its
/// owner's and source's factors.
pub fn win_propensity(stage: usize, owner_factor: f64, source_factor: f64) -> f64 {
    BASE_WIN[stage] * owner_factor * source_factor
}

/// SplitMix64: a tiny, well-known generator; the demo needs variety, not cryptography.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `chance`.
    fn chance(&mut self, chance: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < chance
    }

    fn days(&mut self, low: u64, high: u64) -> TimeDelta {
        // Whole days plus a random time of day, so that events do not all fall at midnight.
        Duration::days(self.between(low, high) as i64) + Duration::minutes(self.below(600) as i64)
    }

    fn tail(&mut self) -> [u8; 10] {
        let mut tail = [0; 10];
        tail[..8].copy_from_slice(&self.next().to_le_bytes());
        tail[8..].copy_from_slice(&self.next().to_le_bytes()[..2]);
        tail
    }
}

pub async fn run(importer: &Importer<'_>, arguments: &DemoArgs) -> anyhow::Result<()> {
    let handler = importer.handler;
    let end = handler
        .now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight exists")?
        .and_utc();
    let lines = history(arguments, end)?;
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    if let Some(path) = &arguments.out {
        std::fs::write(path, &text)
            .with_context(|| format!("could not write {}", path.display()))?;
        println!(
            "demo: wrote {} import lines to {}",
            lines.len(),
            path.display()
        );
        return Ok(());
    }
    // Sample deals mixed into real ones could never be told apart again (the store is
    // append-only), so the demo only ever writes into a store with no leads and no deals.
    for category in [LeadId::CATEGORY, OpportunityId::CATEGORY] {
        if !handler
            .store()
            .read_all(0, 1, Some(category))
            .await?
            .is_empty()
        {
            println!(
                "demo: the store already holds leads or deals; the sample history is only loaded \
                 into an empty store, so nothing was written"
            );
            return Ok(());
        }
    }
    let started = std::time::Instant::now();
    let report = import(importer, text.as_bytes(), false, |_| {}, |_, _| {}).await?;
    if let Some((number, refusal)) = report.refused.first() {
        bail!(
            "demo line {number} was refused: {refusal}: {}",
            lines[number - 1]
        );
    }
    let model = fold_store(handler).await?;
    println!(
        "demo: {} months, {} leads, {} commands, {} opportunities, store head position {}, in \
         {:.1}s",
        arguments.months,
        arguments.leads,
        lines.len(),
        model.deals.len(),
        model.position,
        started.elapsed().as_secs_f64()
    );
    if let Some(id) = model.deals.keys().next() {
        println!("demo: a deal's history: GET /v1/opportunities/{id}/history");
    }
    print_summary(&model);
    Ok(())
}

/// The import lines of the whole history, ending before `end`, in the order of their
/// `occurred_at` (and, at equal times, lead by lead, each lead's lines in their order).
pub fn history(arguments: &DemoArgs, end: DateTime<Utc>) -> anyhow::Result<Vec<Value>> {
    let start = end
        .checked_sub_months(Months::new(arguments.months))
        .context("--months reaches before the calendar")?;
    let span = (end - start).num_minutes().max(1) as u64;
    let mut lines = Vec::new();
    for index in 0..arguments.leads {
        let mut random = Random(arguments.seed.wrapping_mul(1_000_003) ^ u64::from(index));
        let captured_at = start + Duration::minutes(random.below(span) as i64);
        let mut story = Story {
            lines: Vec::new(),
            actor: "",
            end,
        };
        story.lead(&mut random, captured_at);
        lines.extend(
            story
                .lines
                .into_iter()
                .enumerate()
                .map(|(order, (at, line))| ((at, index, order), line)),
        );
    }
    lines.sort_by_key(|(key, _)| *key);
    Ok(lines.into_iter().map(|(_, line)| line).collect())
}

/// One lead's lines, as its owner would have entered them.
struct Story {
    lines: Vec<(DateTime<Utc>, Value)>,
    actor: &'static str,
    end: DateTime<Utc>,
}

impl Story {
    /// Adds a line unless it falls at or after the end of the history. Returns whether it did.
    fn say(&mut self, at: DateTime<Utc>, command: &str, id: &str, body: Value) -> bool {
        if at >= self.end {
            return false;
        }
        self.lines.push((
            at,
            json!({
                "occurred_at": at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "actor": self.actor,
                "command": command,
                "id": id,
                "body": body,
            }),
        ));
        true
    }

    fn lead(&mut self, random: &mut Random, captured_at: DateTime<Utc>) {
        let person = format!("{} {}", random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES));
        let company = *random.pick(&COMPANIES);
        let (owner, owner_factor) = *random.pick(&OWNER_FACTOR);
        let (source, source_factor) = *random.pick(&SOURCE_FACTOR);
        self.actor = owner;
        let lead_id = uuid_v7_at(captured_at, random.tail()).to_string();
        let email = format!(
            "{}@{}.example",
            person.to_lowercase().replace(' ', "."),
            company.to_lowercase()
        );
        let captured = json!({
            "name": person, "company": company, "email": email,
            "country": random.pick(&COUNTRIES), "source": source,
        });
        self.say(captured_at, "capture_lead", &lead_id, captured);

        let fate = random.below(100);
        if fate < 10 {
            return;
        }
        let decided_at = captured_at + random.days(1, 7);
        if fate < 20 {
            self.say(
                decided_at,
                "disqualify_lead",
                &lead_id,
                json!({"reason": "no fit"}),
            );
            return;
        }
        let deal_id = uuid_v7_at(decided_at, random.tail()).to_string();
        // Sales cycles of three to six months, as business-to-business deals take.
        let close_date = (decided_at + random.days(90, 180)).date_naive();
        let currency = match random.below(100) {
            0..50 => "EUR",
            50..85 => "USD",
            _ => "GBP",
        };
        let amount = (random.between(5_000, 250_000) * 100) as i64;
        let product = random.pick(&["platform", "renewal", "expansion", "pilot"]);
        let qualified = json!({
            "criteria": {"budget": true, "authority": random.chance(0.7), "need": true, "timeline": true},
            "opportunity": {
                "id": deal_id, "name": format!("{company} {product}"), "amount": amount,
                "currency": currency, "expected_close_date": close_date.to_string(), "owner": owner,
            },
        });
        if self.say(decided_at, "qualify_lead", &lead_id, qualified) {
            let deal = Deal {
                id: deal_id,
                close_date,
                amount,
                currency,
                at: decided_at,
            };
            self.walk(random, deal, owner_factor * source_factor);
        }
    }

    /// Walks a deal through the stages to its outcome; see the module's documentation for the
    /// probabilities. Each stage takes about its share of the time left to the expected close
    /// date, and the outcome is decided on that date, so that a forecast taken months ahead
    /// already holds the deals its period will close. Stops where the history ends.
    fn walk(&mut self, random: &mut Random, mut deal: Deal, factor: f64) {
        let negotiation = STAGES.len() - 1;
        for stage in 0..negotiation {
            let stages_left = (STAGES.len() - stage) as i64;
            let left = (deal.decision_at() - deal.at).num_minutes().max(0);
            let stint = left / stages_left * random.between(70, 100) as i64 / 100;
            deal.at += Duration::minutes(stint) + Duration::hours(1);
            if !random.chance(BASE_WIN[stage] / BASE_WIN[stage + 1]) {
                self.lose(random, &deal);
                return;
            }
            if random.chance(0.04) && !self.lost_by_mistake(random, &mut deal, STAGES[stage]) {
                return;
            }
            if !self.enter(random, &mut deal, STAGES[stage + 1]) {
                return;
            }
        }
        if random.chance(SLIP_CHANCE) && !self.slip(random, &mut deal) {
            return;
        }
        deal.at = deal.at.max(deal.decision_at()) + Duration::minutes(random.below(480) as i64);
        if random.chance(win_propensity(negotiation, factor, 1.0)) {
            self.say(deal.at, "close", &deal.id, json!({"outcome": "won"}));
        } else {
            self.lose(random, &deal);
        }
    }

    /// The activity that takes a deal into `stage`, and the stage change.
    fn enter(&mut self, random: &mut Random, deal: &mut Deal, stage: &str) -> bool {
        let (kind, summary) = match stage {
            "contacted" => (*random.pick(&["call", "email"]), "first conversation"),
            "quoted" => ("quote_sent", "sent the quote"),
            _ => ("meeting", "negotiation meeting"),
        };
        let activity = json!({"kind": kind, "summary": summary});
        if !self.say(deal.at, "log_activity", &deal.id, activity) {
            return false;
        }
        deal.at += Duration::minutes(5);
        if !self.say(deal.at, "change_stage", &deal.id, json!({"stage": stage})) {
            return false;
        }
        if stage == "quoted" && random.chance(0.15) {
            // The quote came out other than the first estimate, by up to a fifth either way.
            let percent = random.between(80, 120) as i64;
            deal.amount = deal.amount / 100 * percent;
            let body = json!({"amount": deal.amount, "currency": deal.currency});
            return self.say(deal.at, "change_amount", &deal.id, body);
        }
        if stage == "negotiation" && random.chance(0.1) {
            let body = json!({"probability": 90, "forecast_category": "commit"});
            return self.say(deal.at, "override_probability", &deal.id, body);
        }
        true
    }

    /// A few days before the decision, the expected close date moves 2 to 6 weeks later: the
    /// deal slips, out of its period when the new date lies in the next one. Returns whether the
    /// history goes on.
    fn slip(&mut self, random: &mut Random, deal: &mut Deal) -> bool {
        deal.at = deal.at.max(deal.decision_at() - random.days(3, 10));
        deal.close_date += random.days(14, 42);
        let body = json!({"expected_close_date": deal.close_date.to_string()});
        self.say(deal.at, "change_close_date", &deal.id, body)
    }

    fn lose(&mut self, random: &mut Random, deal: &Deal) {
        let reason = *random.pick(&LOSS_REASONS);
        let lost = json!({"outcome": "lost", "reason": reason});
        if !self.say(deal.at, "close", &deal.id, lost) || !random.chance(0.1) {
            return;
        }
        // It came back weeks later, and went nowhere again: still lost in the end.
        let back_at = deal.at + random.days(30, 90);
        if self.say(back_at, "reopen", &deal.id, json!({"stage": "contacted"})) {
            let again = json!({"outcome": "lost", "reason": "went silent"});
            self.say(back_at + random.days(10, 30), "close", &deal.id, again);
        }
    }

    /// Closed lost in error, and reopened in `stage` a few days later.
    fn lost_by_mistake(&mut self, random: &mut Random, deal: &mut Deal, stage: &str) -> bool {
        let lost = json!({"outcome": "lost", "reason": "closed by mistake"});
        if !self.say(deal.at, "close", &deal.id, lost) {
            return false;
        }
        deal.at += random.days(1, 10);
        self.say(deal.at, "reopen", &deal.id, json!({"stage": stage}))
    }
}

/// The deal a story is walking.
struct Deal {
    id: String,
    close_date: NaiveDate,
    amount: i64,
    currency: &'static str,
    /// The time of its latest line.
    at: DateTime<Utc>,
}

impl Deal {
    /// When its outcome is decided: the morning of its expected close date.
    fn decision_at(&self) -> DateTime<Utc> {
        self.close_date
            .and_time(NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default())
            .and_utc()
    }
}

/// The read models of the whole store, folded in memory with the projector's own rules, so that
/// the summary is what `GET .../board` and `GET /v1/forecast` serve once the projectors caught up.
async fn fold_store(handler: &CommandHandler) -> anyhow::Result<ReadModel> {
    let mut model = ReadModel::default();
    loop {
        let page = handler
            .store()
            .read_all(model.position, 5_000, Some(OpportunityId::CATEGORY))
            .await?;
        if page.is_empty() {
            return Ok(model);
        }
        for event in &page {
            model.apply(event);
        }
    }
}

fn major(minor: i128) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn print_summary(model: &ReadModel) {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for deal in model.deals.values() {
        let status = match deal.status {
            OpportunityStatus::Open => "open",
            OpportunityStatus::Won => "won",
            OpportunityStatus::Lost => "lost",
        };
        *by_status.entry(status).or_default() += 1;
    }
    println!("\nopportunities in the store by status: {by_status:?}");
    println!("\nboard (open deals), as GET /v1/pipelines/{{pipeline}}/board serves it:");
    println!(
        "{:<10} {:<12} {:<4} {:>6} {:>16} {:>16}",
        "pipeline", "stage", "cur", "count", "amount", "weighted"
    );
    for (key, figures) in model.board() {
        println!(
            "{:<10} {:<12} {:<4} {:>6} {:>16} {:>16}",
            key.pipeline,
            key.stage,
            key.currency,
            figures.count,
            major(figures.amount),
            major(figures.weighted_amount)
        );
    }
    let mut forecast: BTreeMap<(String, String), ForecastFigures> = BTreeMap::new();
    for ((period, _owner, _pipeline, currency), figures) in model.forecast_by(Granularity::Month) {
        accumulate(&mut forecast, (period, currency), figures);
    }
    println!(
        "\nforecast by month and currency (all owners), as GET /v1/forecast?period=month sums:"
    );
    println!(
        "{:<8} {:<4} {:>5} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "period", "cur", "open", "pipeline", "weighted", "best_case", "commit", "won", "lost"
    );
    for ((period, currency), figures) in &forecast {
        println!(
            "{period:<8} {currency:<4} {:>5} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
            figures.open_count,
            major(figures.pipeline_amount),
            major(figures.weighted_amount),
            major(figures.best_case),
            major(figures.commit),
            major(figures.closed_won),
            major(figures.closed_lost)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use chrono::{DateTime, Months, Utc};
    use commands::{CommandHandler, SystemClock};
    use domain::values::parse_owner;
    use testkit::TestDb;

    use super::{
        BASE_WIN, DemoArgs, OWNER_FACTOR, SOURCE_FACTOR, STAGES, history, run, win_propensity,
    };
    use crate::import::{ACTOR_PREFIX, Importer, import};

    fn arguments(leads: u32, months: u32, seed: u64) -> DemoArgs {
        DemoArgs {
            leads,
            months,
            seed,
            out: None,
        }
    }

    fn end() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn the_demo_writes_through_import_and_only_into_an_empty_store() {
        let database = TestDb::new().await;
        projector::migrate(&database.pool).await.unwrap();
        let handler = CommandHandler::new(database.store(), Arc::new(SystemClock));
        handler.ensure_default_pipeline().await.unwrap();
        let importer = Importer {
            handler: &handler,
            default_owner: parse_owner("unassigned").unwrap(),
        };
        let arguments = arguments(12, 2, 1);

        run(&importer, &arguments).await.unwrap();
        let loaded = handler.store().head_position().await.unwrap();
        assert!(loaded > 12, "the first run loads the sample history");
        let events = handler.store().read_all(1, 10_000, None).await.unwrap();
        let oldest = handler.now() - Months::new(2) - chrono::Duration::days(1);
        for event in &events {
            let actor = event.metadata["actor"].as_str().unwrap();
            assert!(actor.starts_with(ACTOR_PREFIX), "{actor}");
            assert!(event.occurred_at < event.recorded_at, "{event:?}");
            assert!(event.occurred_at > oldest, "{event:?}");
        }

        run(&importer, &arguments).await.unwrap();
        assert_eq!(handler.store().head_position().await.unwrap(), loaded);
    }

    /// Every stream's events as a line at a time would have written them, whatever the order
    /// the lines of different deals ran in.
    async fn streams(handler: &CommandHandler) -> BTreeMap<String, Vec<String>> {
        let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let events = handler.store().read_all(0, 100_000, None).await.unwrap();
        // The default pipeline's definition is the store's own, at its own time.
        for event in events {
            if !event.metadata["actor"]
                .as_str()
                .is_some_and(|actor| actor.starts_with(ACTOR_PREFIX))
            {
                continue;
            }
            let fact = format!(
                "{} {} {} {}",
                event.event_type, event.occurred_at, event.data, event.metadata["command_id"]
            );
            streams.entry(event.stream_id).or_default().push(fact);
        }
        streams
    }

    #[tokio::test]
    async fn lines_run_side_by_side_write_what_one_at_a_time_writes() {
        let lines = history(&arguments(60, 4, 5), end()).unwrap();
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let mut written = Vec::new();
        for strict in [true, false] {
            let database = TestDb::new().await;
            let handler = CommandHandler::new(database.store(), Arc::new(SystemClock));
            handler.ensure_default_pipeline().await.unwrap();
            let importer = Importer {
                handler: &handler,
                default_owner: parse_owner("unassigned").unwrap(),
            };
            let report = import(&importer, text.as_bytes(), strict, |_| {}, |_, _| {})
                .await
                .unwrap();
            assert_eq!(report.refused, [], "strict: {strict}");
            assert_eq!(report.lines, lines.len());
            written.push(streams(&handler).await);
        }
        assert!(written[0].len() > 60, "{}", written[0].len());
        let differing: Vec<&String> = written[0]
            .keys()
            .chain(written[1].keys())
            .filter(|stream| written[0].get(*stream) != written[1].get(*stream))
            .collect();
        assert_eq!(differing, Vec::<&String>::new());
    }

    #[test]
    fn a_seed_gives_the_same_history_in_time_order() {
        let first = history(&arguments(60, 6, 3), end()).unwrap();
        let again = history(&arguments(60, 6, 3), end()).unwrap();
        let other = history(&arguments(60, 6, 4), end()).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, other);
        let times: Vec<&str> = first
            .iter()
            .map(|line| line["occurred_at"].as_str().unwrap())
            .collect();
        assert!(times.is_sorted());
        assert!(times[0] >= "2025-12-01T00:00:00Z", "{}", times[0]);
        assert!(times[times.len() - 1] < "2026-06-01T00:00:00Z");
    }

    fn factor(table: &[(&str, f64)], name: &str) -> f64 {
        table.iter().find(|(known, _)| *known == name).unwrap().1
    }

    /// Over many finished deals, the share won among those that reached each stage is the
    /// documented propensity, on average over their owners and sources.
    #[test]
    fn deals_are_won_at_the_documented_propensities() {
        let lines = history(&arguments(12_000, 60, 11), end()).unwrap();
        // Deals qualified in the first four years: all of them finished long before the end.
        let cutoff = "2025-06-01T00:00:00Z";
        let mut leads: HashMap<&str, (&str, &str)> = HashMap::new();
        // Deal id to (owner and source factor, furthest stage, final outcome).
        let mut deals: HashMap<&str, (f64, usize, Option<&str>)> = HashMap::new();
        for line in &lines {
            let (id, body) = (line["id"].as_str().unwrap(), &line["body"]);
            match line["command"].as_str().unwrap() {
                "capture_lead" => {
                    let actor = line["actor"].as_str().unwrap();
                    leads.insert(id, (actor, body["source"].as_str().unwrap()));
                }
                "qualify_lead" if line["occurred_at"].as_str().unwrap() < cutoff => {
                    let (owner, source) = leads[id];
                    let factor = factor(&OWNER_FACTOR, owner) * factor(&SOURCE_FACTOR, source);
                    let deal = body["opportunity"]["id"].as_str().unwrap();
                    deals.insert(deal, (factor, 0, None));
                }
                "change_stage" => {
                    if let Some(deal) = deals.get_mut(id) {
                        let stage = body["stage"].as_str().unwrap();
                        let index = STAGES.iter().position(|known| *known == stage).unwrap();
                        deal.1 = deal.1.max(index);
                    }
                }
                "close" => {
                    if let Some(deal) = deals.get_mut(id) {
                        deal.2 = body["outcome"].as_str();
                    }
                }
                _ => {}
            }
        }
        assert!(deals.values().all(|(_, _, outcome)| outcome.is_some()));
        for stage in 0..STAGES.len() {
            let reached: Vec<&(f64, usize, Option<&str>)> =
                deals.values().filter(|deal| deal.1 >= stage).collect();
            let count = reached.len() as f64;
            let won = reached.iter().filter(|deal| deal.2 == Some("won")).count() as f64;
            let expected: f64 = reached
                .iter()
                .map(|deal| win_propensity(stage, deal.0, 1.0))
                .sum();
            let (observed, expected) = (won / count, expected / count);
            assert!(
                (observed - expected).abs() < 0.03,
                "stage {}: won {observed:.3} of {count} deals, expected {expected:.3} (base {})",
                STAGES[stage],
                BASE_WIN[stage]
            );
        }
    }
}
