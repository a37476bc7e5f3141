//! Query endpoints over the store. Leads are folded from their streams; the history and the event
//! feed read the store directly, since they are the audit trail itself. Deals, the board, the
//! forecast and follow-ups come from the read models (`read_routes`).

use axum::Json;
use axum::extract::{Path, State};
use domain::lead::{Criteria, LeadStatus};
use domain::values::{LeadId, OpportunityId};
use eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::extract::{Query, path_uuid};
use crate::problem::ApiError;

#[derive(Serialize)]
pub struct LeadView {
    id: LeadId,
    name: String,
    company: Option<String>,
    email: Option<String>,
    country: Option<String>,
    source: Option<String>,
    owner: Option<String>,
    status: LeadStatus,
    criteria: Option<Criteria>,
    disqualification_reason: Option<String>,
    opportunity_id: Option<OpportunityId>,
    version: i64,
}

pub async fn lead(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<LeadView>, ApiError> {
    let id = LeadId(path_uuid("lead", &id)?);
    let loaded = app.handler.load_lead(id).await?;
    let lead = loaded
        .state
        .ok_or_else(|| ApiError::NotFound(format!("lead {id} not found")))?;
    let text = |value: &Option<domain::values::Text>| value.as_ref().map(ToString::to_string);
    Ok(Json(LeadView {
        id,
        name: lead.profile.name.to_string(),
        company: text(&lead.profile.company),
        email: lead
            .profile
            .email
            .as_ref()
            .map(|email| email.as_str().to_owned()),
        country: lead
            .profile
            .country
            .as_ref()
            .map(|country| country.as_str().to_owned()),
        source: text(&lead.profile.source),
        owner: text(&lead.owner),
        status: lead.status,
        criteria: lead.criteria,
        disqualification_reason: text(&lead.disqualification_reason),
        opportunity_id: lead.opportunity_id,
        version: loaded.version,
    }))
}

#[derive(Serialize)]
pub struct EventList {
    events: Vec<RecordedEvent>,
}

pub async fn history(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    let id = OpportunityId(path_uuid("opportunity", &id)?);
    let events = app.handler.store().read_stream(&id.stream_id()).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("opportunity {id} not found")));
    }
    Ok(Json(EventList { events }))
}

/// Pages of the feed are bounded so that one request cannot ask for the whole log.
const MAX_FEED_PAGE: i64 = 1000;
const DEFAULT_FEED_PAGE: i64 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    after: Option<i64>,
    limit: Option<i64>,
    category: Option<String>,
}

#[derive(Serialize)]
pub struct Feed {
    events: Vec<RecordedEvent>,
    /// Pass as `after` to get the next page; equal to the request's `after` when nothing is new.
    next_after: i64,
}

pub async fn feed(
    State(app): State<AppState>,
    Query(query): Query<FeedQuery>,
) -> Result<Json<Feed>, ApiError> {
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::Unprocessable {
            rule: "invalid-value",
            detail: "after: must not be negative".to_owned(),
        });
    }
    let limit = query.limit.unwrap_or(DEFAULT_FEED_PAGE);
    if !(1..=MAX_FEED_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable {
            rule: "invalid-value",
            detail: format!("limit: must be from 1 to {MAX_FEED_PAGE}"),
        });
    }
    let category = query
        .category
        .as_deref()
        .filter(|category| !category.is_empty());
    let events = app.handler.store().read_all(after, limit, category).await?;
    let next_after = events.last().map_or(after, |event| event.position);
    Ok(Json(Feed { events, next_after }))
}
