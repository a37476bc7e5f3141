use domain::lead::{
    Criteria, Email, LeadCommand, LeadDecider, LeadEvent, LeadProfile, LeadStatus,
    QualificationRule,
};
use domain::values::{Country, OpportunityId};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{Step, assert_idempotent, run};
use crate::support::{text, uuid};

fn texts() -> impl Strategy<Value = domain::values::Text> {
    prop::sample::select(vec!["Ada", "  Grace Hopper ", "Zoë", "株式会社", "webinar"])
        .prop_map(text)
}

fn profile() -> impl Strategy<Value = LeadProfile> {
    (
        texts(),
        prop::option::of(texts()),
        prop::option::of(
            prop::sample::select(vec!["a@b", "ada@example.com"])
                .prop_map(|email| Email::parse(email).unwrap()),
        ),
        prop::option::of(
            prop::sample::select(vec!["DE", "GB", "US", "JP"])
                .prop_map(|code| Country::parse(code).unwrap()),
        ),
        prop::option::of(texts()),
    )
        .prop_map(|(name, company, email, country, source)| LeadProfile {
            name,
            company,
            email,
            country,
            source,
        })
}

fn criteria() -> impl Strategy<Value = Criteria> {
    any::<[bool; 4]>().prop_map(|[budget, authority, need, timeline]| Criteria {
        budget,
        authority,
        need,
        timeline,
    })
}

fn rule() -> impl Strategy<Value = QualificationRule> {
    prop_oneof![
        3 => Just(QualificationRule::default()),
        1 => (any::<bool>(), 0u8..=3).prop_map(|(require_need, min)| QualificationRule {
            require_need,
            min_of_budget_authority_timeline: min,
        }),
    ]
}

fn command() -> impl Strategy<Value = LeadCommand> {
    let owner = prop::sample::select(vec!["alice", "bob", "carol"]).prop_map(text);
    prop_oneof![
        1 => profile().prop_map(LeadCommand::Capture),
        4 => (owner, texts()).prop_map(|(owner, rule)| LeadCommand::Route { owner, rule }),
        3 => (criteria(), rule(), 0u128..3).prop_map(|(criteria, rule, id)| {
            LeadCommand::Qualify {
                criteria,
                rule,
                opportunity_id: OpportunityId(uuid(id)),
            }
        }),
        1 => texts().prop_map(|reason| LeadCommand::Disqualify { reason }),
    ]
}

fn commands() -> impl Strategy<Value = Vec<LeadCommand>> {
    (
        prop::option::weighted(0.9, profile()),
        prop::collection::vec(command(), 0..24),
    )
        .prop_map(|(capture, rest)| {
            capture
                .map(LeadCommand::Capture)
                .into_iter()
                .chain(rest)
                .collect()
        })
}

fn check(step: &Step<'_, LeadDecider>) -> Result<(), TestCaseError> {
    let Some(lead) = step.after else {
        prop_assert!(step.history.is_empty(), "no lead without events");
        return Ok(());
    };
    prop_assert!(matches!(step.history[0], LeadEvent::LeadCaptured(_)));
    prop_assert_eq!(
        step.history
            .iter()
            .filter(|event| matches!(event, LeadEvent::LeadCaptured(_)))
            .count(),
        1,
        "captured once"
    );
    match lead.status {
        LeadStatus::Open => {
            prop_assert_eq!(lead.criteria, None);
            prop_assert_eq!(lead.opportunity_id, None);
            prop_assert_eq!(&lead.disqualification_reason, &None);
        }
        LeadStatus::Qualified => {
            prop_assert!(lead.criteria.is_some());
            prop_assert!(
                lead.opportunity_id.is_some(),
                "a qualified lead is converted"
            );
            prop_assert_eq!(&lead.disqualification_reason, &None);
        }
        LeadStatus::Disqualified => {
            prop_assert!(lead.disqualification_reason.is_some());
            prop_assert_eq!(lead.criteria, None);
            prop_assert_eq!(lead.opportunity_id, None);
        }
    }

    // A qualified or disqualified lead accepts nothing more.
    if step
        .before
        .as_ref()
        .is_some_and(|before| before.status != LeadStatus::Open)
    {
        prop_assert!(step.decided.is_err(), "{:?} on a closed lead", step.command);
    }

    match (step.command, step.decided) {
        (
            LeadCommand::Qualify {
                criteria,
                rule,
                opportunity_id,
            },
            Ok(events),
        ) => {
            // Qualification converts, atomically: both events from one decision.
            prop_assert!(rule.accepts(criteria));
            prop_assert_eq!(
                events,
                &vec![
                    LeadEvent::LeadQualified {
                        criteria: *criteria
                    },
                    LeadEvent::LeadConverted {
                        opportunity_id: *opportunity_id
                    },
                ]
            );
        }
        (LeadCommand::Qualify { criteria, rule, .. }, Err(_)) if step.before.is_some() => {
            let open = step.before.as_ref().unwrap().status == LeadStatus::Open;
            prop_assert!(
                !open || !rule.accepts(criteria),
                "refused a qualifying lead"
            );
        }
        (LeadCommand::Route { owner, .. }, Ok(events)) => {
            let before = step.before.as_ref().unwrap();
            prop_assert_eq!(events.is_empty(), before.owner.as_ref() == Some(owner));
            prop_assert_eq!(lead.owner.as_ref(), Some(owner));
            assert_idempotent(step)?;
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    #[test]
    fn lead_invariants_hold_for_any_command_sequence(commands in commands()) {
        run::<LeadDecider>(&commands, check)?;
    }
}
