//! Lead routing: round-robin fairness across a restart, field matches and the default owner.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use workflow::WorkflowConfig;

use crate::support::{Harness, actor, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_shares_300_leads_fairly_across_a_restart() {
    const LEADS: i64 = 300;
    let harness = Harness::new().await;
    let instance = harness.start(WorkflowConfig::default());

    let capturing = {
        let harness = &harness;
        async move {
            futures::stream::iter(0..LEADS)
                .map(|_| harness.capture_lead("DE"))
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
        }
    };
    // Restart once about a third of the leads are routed, while captures may still be arriving.
    let restarting = async {
        eventually(Duration::from_secs(60), "100 leads routed", || async {
            (harness.count_events("LeadRouted").await >= 100).then_some(())
        })
        .await;
        instance.stop().await;
        harness.start(WorkflowConfig::default())
    };
    let (leads, instance) = tokio::join!(capturing, restarting);
    assert_eq!(leads.len() as i64, LEADS);

    eventually(Duration::from_secs(60), "300 leads routed", || async {
        (harness.count_events("LeadRouted").await >= LEADS).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut shares: HashMap<String, i64> = HashMap::new();
    for lead in &leads {
        let history = harness.history(&lead.stream_id()).await;
        let routed: Vec<_> = history
            .iter()
            .filter(|event| event.event_type == "LeadRouted")
            .collect();
        assert_eq!(routed.len(), 1, "lead {lead} routed {} times", routed.len());
        assert_eq!(actor(routed[0]), "workflow:emea");
        assert_eq!(routed[0].data["rule"], "emea");
        let owner = routed[0].data["owner"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *shares.entry(owner).or_default() += 1;
    }
    assert_eq!(shares.len(), 3, "{shares:?}");
    for owner in ["anna", "bruno", "chloe"] {
        let share = shares.get(owner).copied().unwrap_or_default();
        assert!(
            (99..=101).contains(&share),
            "{owner} got {share}: {shares:?}"
        );
    }
    instance.stop().await;
    harness.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_matching_no_rule_go_to_the_default_owner_and_fields_match() {
    let harness = Harness::new().await;
    let config = workflow::config::parse(
        r#"
[routing]
default_owner = "dora"

[[routing.rules]]
name = "partners"
when = { source = ["Partner"] }
owner = "paul"

[[routing.rules]]
name = "france"
when = { country = ["FR"] }
round_robin = ["francois"]
"#,
        None,
    )
    .expect("the config parses");
    let instance = harness.start(config);
    let french = harness.capture_lead("FR").await;
    let american = harness.capture_lead("US").await;
    let partner = {
        let id = domain::values::LeadId(uuid::Uuid::now_v7());
        harness
            .handler
            .capture_lead(
                &harness.api(),
                id,
                domain::lead::LeadProfile {
                    name: crate::support::text("P"),
                    company: None,
                    email: None,
                    country: Some(domain::values::Country::parse("FR").expect("country")),
                    source: Some(crate::support::text("partner")),
                },
            )
            .await
            .expect("captured");
        id
    };
    eventually(Duration::from_secs(20), "three leads routed", || async {
        (harness.count_events("LeadRouted").await == 3).then_some(())
    })
    .await;
    for (lead, owner, rule) in [
        (french, "francois", "france"),
        (american, "dora", "default"),
        (partner, "paul", "partners"),
    ] {
        let history = harness.history(&lead.stream_id()).await;
        let routed = history
            .iter()
            .find(|event| event.event_type == "LeadRouted")
            .expect("routed");
        assert_eq!(routed.data["owner"], owner);
        assert_eq!(routed.data["rule"], rule);
        assert_eq!(actor(routed), format!("workflow:{rule}"));
    }
    instance.stop().await;
    harness.finish().await;
}
