//! What the scenarios send: the bench's deals and single-event commands, and the cheap generator
//! that picks them.

use commands::CommandContext;
use domain::opportunity::NewOpportunity;
use domain::values::{Amount, Currency, OpportunityId, PipelineSlug, Text, parse_owner};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Deployment;

const STAGES: [&str; 4] = ["new", "contacted", "quoted", "negotiation"];

/// Creates `count` deals through the command handler, 16 at a time.
pub async fn create_deals(deployment: &Deployment, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let close_date = deployment.handler.now().date_naive() + chrono::Days::new(60);
    futures::stream::iter(0..count)
        .map(|index| async move {
            let id = OpportunityId(Uuid::now_v7());
            let opportunity = NewOpportunity {
                name: Text::parse("name", &format!("bench deal {index}"), Text::SHORT)?,
                lead_id: None,
                pipeline: PipelineSlug::default_pipeline(),
                stage: None,
                amount: Amount::parse(1_000_000)?,
                currency: Currency::parse(["EUR", "USD"][index % 2])?,
                expected_close_date: close_date,
                owner: parse_owner(["anna", "bruno", "chloe"][index % 3])?,
            };
            deployment
                .handler
                .create_opportunity(&CommandContext::new("bench:setup"), id, opportunity)
                .await?;
            anyhow::Ok(id.0)
        })
        .buffer_unordered(16)
        .try_collect()
        .await
}

/// xorshift64*: each client's own cheap generator, so that clients do not contend on one.
pub(crate) struct Random(pub(crate) u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// A number in [0, 1), from the top 53 bits (a double's precision).
    pub(crate) fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn next_command(random: &mut Random, deal: Uuid) -> (String, Value) {
    match random.below(3) {
        0 => (
            format!("/v1/opportunities/{deal}/stage"),
            json!({ "stage": STAGES[random.below(STAGES.len())] }),
        ),
        1 => (
            format!("/v1/opportunities/{deal}/activities"),
            json!({ "kind": "note", "summary": "bench activity with a summary of ordinary length" }),
        ),
        _ => (
            format!("/v1/opportunities/{deal}/amount"),
            json!({ "amount": 100_000 + random.below(10_000_000), "currency": "EUR" }),
        ),
    }
}
