//! The lead aggregate: captured, routed to an owner, then qualified (which converts it into an
//! opportunity) or disqualified.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decider::Decider;
use crate::values::{Country, InvalidValue, OpportunityId, Owner, Text};

/// What is known about a lead when it is captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeadProfile {
    /// The person's name.
    pub name: Text,
    /// The company the person works for; null when unknown.
    pub company: Option<Text>,
    /// The person's e-mail address; null when unknown.
    pub email: Option<Email>,
    /// Where the person is; null when unknown. Routing rules may match on it.
    pub country: Option<Country>,
    /// Where the lead came from (a campaign, a web form, a fair); null when unknown.
    pub source: Option<Text>,
}

/// An e-mail address: one `@` with something on both sides, no white space, at most 254 bytes
/// (the SMTP path limit). Deliverability is not this type's business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Email(#[schemars(regex(pattern = r"^[^@\s]+@[^@\s]+$"), length(max = 254))] String);

impl Email {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let well_formed = value.len() <= 254
            && !value
                .chars()
                .any(|character| character.is_whitespace() || character.is_control())
            && matches!(value.split_once('@'), Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if well_formed {
            Ok(Email(value.to_owned()))
        } else {
            Err(InvalidValue::new(
                "email",
                format!("{value:?} is not an e-mail address"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// BANT: the four questions a lead is qualified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Criteria {
    /// The buyer has a budget for it.
    pub budget: bool,
    /// The contact can make or sway the decision.
    pub authority: bool,
    /// The buyer has a need the offer meets.
    pub need: bool,
    /// The buyer means to decide within a known time.
    pub timeline: bool,
}

/// Which answers qualify a lead. The default asks for `need` and at least two of the other three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualificationRule {
    pub require_need: bool,
    pub min_of_budget_authority_timeline: u8,
}

impl Default for QualificationRule {
    fn default() -> Self {
        Self {
            require_need: true,
            min_of_budget_authority_timeline: 2,
        }
    }
}

impl QualificationRule {
    pub fn accepts(&self, criteria: &Criteria) -> bool {
        let others = [criteria.budget, criteria.authority, criteria.timeline]
            .into_iter()
            .filter(|met| *met)
            .count();
        (criteria.need || !self.require_need)
            && others >= usize::from(self.min_of_budget_authority_timeline)
    }

    pub fn describe(&self) -> String {
        let need = if self.require_need { "need and " } else { "" };
        format!(
            "qualification requires {need}at least {} of budget, authority and timeline",
            self.min_of_budget_authority_timeline
        )
    }
}

/// The events of a `lead-<id>` stream. The doc comments of the variants and their fields are the
/// descriptions in the published JSON Schemas (docs/schemas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event_type", content = "data")]
pub enum LeadEvent {
    /// A lead was captured: the first event of every lead stream.
    LeadCaptured(LeadProfile),
    /// Routing rules assigned the lead an owner.
    LeadRouted {
        /// Who owns the lead now.
        owner: Owner,
        /// The name of the routing rule that chose the owner.
        rule: Text,
    },
    /// The lead met its qualification rule. Always followed, in the same transaction, by
    /// `LeadConverted` and the `OpportunityCreated` it names.
    LeadQualified {
        /// The BANT answers the lead was qualified with.
        criteria: Criteria,
    },
    /// The lead was disqualified; it cannot be qualified afterwards.
    LeadDisqualified {
        /// Why the lead was disqualified.
        reason: Text,
    },
    /// The qualified lead became an opportunity; the last event of a converted lead.
    LeadConverted {
        /// The opportunity the lead became; its stream is `opportunity-<opportunity_id>`.
        opportunity_id: OpportunityId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadCommand {
    Capture(LeadProfile),
    Route {
        owner: Owner,
        rule: Text,
    },
    /// Qualifies and converts in one decision: the opportunity it becomes is created by the
    /// opportunity aggregate in the same transaction.
    Qualify {
        criteria: Criteria,
        rule: QualificationRule,
        opportunity_id: OpportunityId,
    },
    Disqualify {
        reason: Text,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    Open,
    Qualified,
    Disqualified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    pub profile: LeadProfile,
    pub owner: Option<Owner>,
    pub status: LeadStatus,
    pub criteria: Option<Criteria>,
    pub disqualification_reason: Option<Text>,
    pub opportunity_id: Option<OpportunityId>,
}

/// `None` until captured.
pub type LeadState = Option<Lead>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    #[error("lead not found")]
    LeadNotFound,
    #[error("lead already captured")]
    LeadAlreadyCaptured,
    #[error("lead was disqualified and cannot be qualified or routed")]
    LeadAlreadyDisqualified,
    #[error("lead was already qualified and converted into an opportunity")]
    LeadAlreadyConverted,
    #[error("lead does not meet the qualification criteria: {0}")]
    QualificationCriteriaNotMet(String),
}

pub struct LeadDecider;

fn open_lead(state: &LeadState) -> Result<&Lead, LeadError> {
    let lead = state.as_ref().ok_or(LeadError::LeadNotFound)?;
    match lead.status {
        LeadStatus::Open => Ok(lead),
        LeadStatus::Disqualified => Err(LeadError::LeadAlreadyDisqualified),
        LeadStatus::Qualified => Err(LeadError::LeadAlreadyConverted),
    }
}

impl Decider for LeadDecider {
    type State = LeadState;
    type Command = LeadCommand;
    type Event = LeadEvent;
    type Error = LeadError;

    fn decide(command: &LeadCommand, state: &LeadState) -> Result<Vec<LeadEvent>, LeadError> {
        match command {
            LeadCommand::Capture(profile) => match state {
                Some(_) => Err(LeadError::LeadAlreadyCaptured),
                None => Ok(vec![LeadEvent::LeadCaptured(profile.clone())]),
            },
            LeadCommand::Route { owner, rule } => {
                let lead = open_lead(state)?;
                if lead.owner.as_ref() == Some(owner) {
                    return Ok(vec![]);
                }
                Ok(vec![LeadEvent::LeadRouted {
                    owner: owner.clone(),
                    rule: rule.clone(),
                }])
            }
            LeadCommand::Qualify {
                criteria,
                rule,
                opportunity_id,
            } => {
                open_lead(state)?;
                if !rule.accepts(criteria) {
                    return Err(LeadError::QualificationCriteriaNotMet(rule.describe()));
                }
                Ok(vec![
                    LeadEvent::LeadQualified {
                        criteria: *criteria,
                    },
                    LeadEvent::LeadConverted {
                        opportunity_id: *opportunity_id,
                    },
                ])
            }
            LeadCommand::Disqualify { reason } => {
                open_lead(state)?;
                Ok(vec![LeadEvent::LeadDisqualified {
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn evolve(state: LeadState, event: &LeadEvent) -> LeadState {
        if let LeadEvent::LeadCaptured(profile) = event {
            return Some(Lead {
                profile: profile.clone(),
                owner: None,
                status: LeadStatus::Open,
                criteria: None,
                disqualification_reason: None,
                opportunity_id: None,
            });
        }
        let mut lead = state?;
        match event {
            LeadEvent::LeadCaptured(_) => {}
            LeadEvent::LeadRouted { owner, .. } => lead.owner = Some(owner.clone()),
            LeadEvent::LeadQualified { criteria } => {
                lead.status = LeadStatus::Qualified;
                lead.criteria = Some(*criteria);
            }
            LeadEvent::LeadDisqualified { reason } => {
                lead.status = LeadStatus::Disqualified;
                lead.disqualification_reason = Some(reason.clone());
            }
            LeadEvent::LeadConverted { opportunity_id } => {
                lead.opportunity_id = Some(*opportunity_id)
            }
        }
        Some(lead)
    }
}
