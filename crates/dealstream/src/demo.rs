//! `dealstream demo`: a realistic sample history written through the same command layer as the
//! API, so that every event carries ordinary metadata and passes every rule.
//!
//! The data is pseudo-random but reproducible for a given seed. Leads are worked concurrently, as
//! a sales team's would be, which also exercises group commit.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{Days, Duration, NaiveDate};
use commands::{CommandContext, CommandHandler, OpportunityRequest, QualifiedOpportunity};
use domain::lead::{Criteria, LeadProfile};
use domain::opportunity::{OpportunityCommand, OpportunityStatus};
use domain::values::{
    ActivityId, ActivityKind, Amount, Country, Currency, LeadId, OpportunityId, Outcome,
    PipelineSlug, StageName, Text, parse_owner,
};
use futures::{StreamExt, TryStreamExt};
use projector::rules::{ForecastFigures, Granularity, ReadModel, accumulate};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// How many leads to capture.
    #[arg(long, default_value_t = 300)]
    leads: u32,
    /// Seed of the pseudo-random history; the same seed gives the same kind of history.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Leads worked at the same time.
const CONCURRENCY: usize = 16;

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
const SOURCES: [&str; 5] = ["web", "referral", "event", "partner", "outbound"];
const OWNERS: [&str; 6] = ["anna", "bruno", "chloe", "dmitri", "emma", "farid"];
const LOSS_REASONS: [&str; 4] = [
    "chose a competitor",
    "no budget this year",
    "project cancelled",
    "went silent",
];

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

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

pub async fn run(handler: &CommandHandler, arguments: &DemoArgs) -> anyhow::Result<()> {
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
    let deals: Vec<Option<OpportunityId>> = futures::stream::iter(0..arguments.leads)
        .map(|index| {
            work_lead(
                handler,
                arguments.seed.wrapping_mul(1_000_003) ^ u64::from(index),
            )
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let deals: Vec<OpportunityId> = deals.into_iter().flatten().collect();
    let model = fold_store(handler).await?;
    println!(
        "demo: {} leads, {} opportunities, store head position {}, in {:.1}s",
        arguments.leads,
        deals.len(),
        model.position,
        started.elapsed().as_secs_f64()
    );
    if let Some(id) = deals.first() {
        println!("demo: a deal's history: GET /v1/opportunities/{id}/history");
    }
    print_summary(&model);
    Ok(())
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

fn text(field: &'static str, value: &str) -> anyhow::Result<Text> {
    Text::parse(field, value, Text::LONG).context("demo text")
}

fn actor(owner: &str) -> CommandContext {
    CommandContext::new(format!("api:{owner}"))
}

/// Captures one lead and takes it as far as its dice say. Returns the deal it became, if any.
async fn work_lead(handler: &CommandHandler, seed: u64) -> anyhow::Result<Option<OpportunityId>> {
    let mut random = Random(seed);
    let person = format!("{} {}", random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES));
    let company = random.pick(&COMPANIES);
    let owner = random.pick(&OWNERS);
    let lead_id = LeadId(Uuid::now_v7());
    let profile = LeadProfile {
        name: text("name", &person)?,
        company: Some(text("company", company)?),
        email: Some(domain::lead::Email::parse(&format!(
            "{}@{}.example",
            person.to_lowercase().replace(' ', "."),
            company.to_lowercase()
        ))?),
        country: Some(Country::parse(random.pick(&COUNTRIES))?),
        source: Some(text("source", random.pick(&SOURCES))?),
    };
    handler
        .capture_lead(&actor(owner), lead_id, profile)
        .await?;

    let fate = random.percent();
    if fate < 10 {
        return Ok(None);
    }
    if fate < 20 {
        handler
            .disqualify_lead(&actor(owner), lead_id, text("reason", "no fit")?)
            .await?;
        return Ok(None);
    }

    let today = handler.now().date_naive();
    let close_date = today
        .checked_add_days(Days::new(random.below(180) + 7))
        .unwrap_or(today);
    let currency = match random.percent() {
        0..50 => "EUR",
        50..85 => "USD",
        _ => "GBP",
    };
    let opportunity_id = OpportunityId(Uuid::now_v7());
    let draft = QualifiedOpportunity {
        name: text(
            "name",
            &format!(
                "{company} {}",
                random.pick(&["platform", "renewal", "expansion", "pilot"])
            ),
        )?,
        pipeline: PipelineSlug::default_pipeline(),
        amount: Amount::parse(i128::from(random.below(245_000) + 5_000) * 100)?,
        currency: Currency::parse(currency)?,
        expected_close_date: close_date,
        owner: Some(parse_owner(owner)?),
    };
    let criteria = Criteria {
        budget: true,
        authority: random.percent() < 70,
        need: true,
        timeline: true,
    };
    let fallback = parse_owner("unassigned")?;
    handler
        .qualify_lead(
            &actor(owner),
            lead_id,
            criteria,
            opportunity_id,
            draft,
            fallback,
        )
        .await?;

    work_deal(handler, opportunity_id, owner, close_date, &mut random).await?;
    Ok(Some(opportunity_id))
}

/// One deal being worked by its owner; every call is a command of its own, with its own id.
struct Deal<'a> {
    handler: &'a CommandHandler,
    id: OpportunityId,
    owner: &'a str,
}

impl Deal<'_> {
    async fn send(&self, command: OpportunityCommand) -> anyhow::Result<()> {
        self.handle(OpportunityRequest::Other(command)).await
    }

    async fn handle(&self, request: OpportunityRequest) -> anyhow::Result<()> {
        self.handler
            .handle_opportunity(&actor(self.owner), self.id, request)
            .await?;
        Ok(())
    }

    async fn move_to(&self, stage: &str) -> anyhow::Result<()> {
        self.handle(OpportunityRequest::ChangeStage {
            stage: StageName::parse(stage)?,
            reason: None,
        })
        .await
    }

    async fn activity(
        &self,
        kind: ActivityKind,
        summary: &str,
        days_ago: i64,
    ) -> anyhow::Result<()> {
        self.send(OpportunityCommand::LogActivity {
            activity_id: ActivityId(Uuid::now_v7()),
            kind,
            summary: text("summary", summary)?,
            occurred_at: self.handler.now() - Duration::days(days_ago),
        })
        .await
    }
}

async fn work_deal(
    handler: &CommandHandler,
    id: OpportunityId,
    owner: &str,
    close_date: NaiveDate,
    random: &mut Random,
) -> anyhow::Result<()> {
    let deal = Deal { handler, id, owner };
    let reach = random.percent();
    if reach >= 20 {
        deal.activity(ActivityKind::Call, "intro call", 20).await?;
        deal.move_to("contacted").await?;
    }
    if reach >= 45 {
        deal.activity(ActivityKind::QuoteSent, "sent the quote", 12)
            .await?;
        deal.move_to("quoted").await?;
    }
    if reach >= 70 {
        deal.activity(ActivityKind::Meeting, "negotiation meeting", 5)
            .await?;
        deal.move_to("negotiation").await?;
    }
    if random.percent() < 10 {
        let current = handler.load_opportunity(id).await?.state;
        let currency = current.context("the deal was just created")?.currency;
        deal.send(OpportunityCommand::ChangeAmount {
            amount: Amount::parse(i128::from(random.below(100_000) + 1_000) * 100)?,
            currency,
        })
        .await?;
    }
    if random.percent() < 10 {
        let later = close_date
            .checked_add_days(Days::new(30))
            .unwrap_or(close_date);
        deal.send(OpportunityCommand::ChangeCloseDate {
            expected_close_date: later,
        })
        .await?;
    }
    let ending = random.percent();
    if ending < 15 {
        deal.send(OpportunityCommand::Close {
            outcome: Outcome::Won,
            reason: None,
            closed_at: handler.now(),
        })
        .await?;
    } else if ending < 25 {
        let reason = random.pick(&LOSS_REASONS);
        deal.send(OpportunityCommand::Close {
            outcome: Outcome::Lost,
            reason: Some(text("reason", reason)?),
            closed_at: handler.now(),
        })
        .await?;
    }
    Ok(())
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
    use std::sync::Arc;

    use commands::{CommandHandler, SystemClock};
    use testkit::TestDb;

    use super::{DemoArgs, run};

    #[tokio::test]
    async fn the_demo_never_writes_into_a_store_that_holds_leads_or_deals() {
        let database = TestDb::new().await;
        projector::migrate(&database.pool).await.unwrap();
        let handler = CommandHandler::new(database.store(), Arc::new(SystemClock));
        handler.ensure_default_pipeline().await.unwrap();
        let arguments = DemoArgs { leads: 4, seed: 1 };

        run(&handler, &arguments).await.unwrap();
        let loaded = handler.store().head_position().await.unwrap();
        assert!(loaded > 1, "the first run loads the sample history");

        run(&handler, &arguments).await.unwrap();
        assert_eq!(handler.store().head_position().await.unwrap(), loaded);
    }
}
