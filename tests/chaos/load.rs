//! The steady mixed load: workers that each walk deals through their lives over HTTP (leads
//! captured, qualified or disqualified, deals created, activities that trigger the workflow's
//! rules, stage moves, closing and reopening, queries) while the faults go on.
//!
//! Every command carries an `Idempotency-Key` and is retried with the same key and body on a
//! 503, a 409 (a repeat still in flight) or a lost connection, so that it is answered once
//! whatever happens to the processes. The ledger records each acknowledged command with its
//! answer, and every status any process answered, for the checks at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Rng;

/// The actor of the load's commands (`api:chaos` in the events' metadata), which tells them
/// apart from the workflow's reactions that share their correlation id.
pub const ACTOR: &str = "chaos";

/// How long one request may take before the client gives up on it and repeats it; a frozen API
/// process holds requests for longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command is retried before the worker gives up on it (and counts it abandoned).
/// Longer than any fault lasts, so that in a healthy run nothing is abandoned.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// A command the API acknowledged (2xx), with its answer.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    /// The Idempotency-Key and correlation id it was sent with.
    pub key: Uuid,
    pub route: String,
    /// `{id, version, position, opportunity_id?}`.
    pub answer: Value,
    /// Whether the command may rightly append nothing (completing a follow-up the workflow
    /// already completed, overriding a probability with the value it has).
    pub may_be_noop: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub acknowledged: Vec<Acknowledged>,
    /// Every status any process answered, retries included.
    pub statuses: BTreeMap<u16, u64>,
    /// 5xx answers other than 503: the contract allows none.
    pub server_errors: Vec<String>,
    /// Commands finally answered with a 4xx: the load sends only valid commands, so each one
    /// is worth a look, though none breaks an invariant by itself.
    pub refused: Vec<String>,
    /// Commands given up on after [`COMMAND_DEADLINE`].
    pub abandoned: u64,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub transport_errors: u64,
    pub queries: u64,
}

impl Ledger {
    fn status(&mut self, status: u16, route: &str, body: &str) {
        *self.statuses.entry(status).or_default() += 1;
        if status >= 500 && status != 503 {
            self.server_errors
                .push(format!("{route} -> {status}: {body}"));
        }
    }
}

#[derive(Clone)]
pub struct Load {
    http: reqwest::Client,
    base: String,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Load {
    pub fn new(api_port: u16, token: &str) -> Load {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .expect("a token is visible ASCII"),
        );
        Load {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(1))
                .build()
                .expect("an HTTP client"),
            base: format!("http://127.0.0.1:{api_port}"),
            ledger: Arc::default(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A worker that panicked while holding the lock cannot have left the ledger half
        // written: every update is a single push or increment.
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the API answers `/readyz` (database and NATS reachable).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ready = self.http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Sends a command until it is answered; `None` when it was refused or abandoned.
    async fn command(&self, route: String, body: Value, may_be_noop: bool) -> Option<Value> {
        let key = Uuid::now_v7();
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            if Instant::now() > deadline {
                self.ledger().abandoned += 1;
                return None;
            }
            let sent = self
                .http
                .post(format!("{}{route}", self.base))
                .header("Idempotency-Key", key.to_string())
                .header("X-Correlation-Id", key.to_string())
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(_) => {
                    self.ledger().transport_errors += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            let Ok(text) = response.text().await else {
                self.ledger().transport_errors += 1;
                continue;
            };
            self.ledger().status(status, &route, &text);
            match status {
                200..=299 => {
                    let answer: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|error| panic!("{route} answered {text:?}: {error}"));
                    self.ledger().acknowledged.push(Acknowledged {
                        key,
                        route,
                        answer: answer.clone(),
                        may_be_noop,
                    });
                    return Some(answer);
                }
                // 409: the first attempt of this key is still running somewhere (the client
                // gave up on it, the server did not); its answer comes with a later repeat.
                // Any other 5xx: the command may or may not have happened, and only a repeat
                // with the same key can tell, so it is repeated too (and counted above).
                409 | 500..=599 => {
                    let pause = retry_after.map_or(Duration::from_millis(250), |seconds| {
                        Duration::from_secs(seconds.min(2))
                    });
                    tokio::time::sleep(pause).await;
                }
                _ => {
                    self.ledger()
                        .refused
                        .push(format!("{route} -> {status}: {text}"));
                    return None;
                }
            }
        }
    }

    /// A query, once: reads must never answer a 5xx other than 503 either.
    async fn query(&self, path: String) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await;
        let mut ledger = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let mut ledger = self.ledger();
                ledger.status(status, &path, &text);
                ledger
            }
            Err(_) => {
                let mut ledger = self.ledger();
                ledger.transport_errors += 1;
                ledger
            }
        };
        ledger.queries += 1;
    }
}

/// What a worker knows of its deal. The workflow moves deals between `new`, `contacted` and
/// `quoted` on its own, never into or out of `negotiation`, so moving between `negotiation` and
/// `contacted` is always a real change and never the no-op a same-stage move would be.
struct Deal {
    id: String,
    currency: &'static str,
    amount: i64,
    close_date: NaiveDate,
    in_negotiation: bool,
    closed: bool,
    owner: Option<&'static str>,
}

const OWNERS: [&str; 3] = ["dora", "emil", "farid"];
const COUNTRIES: [Option<&str>; 5] = [Some("DE"), Some("FR"), Some("GB"), Some("US"), None];
const ACTIVITIES: [&str; 5] = ["call", "email", "meeting", "note", "quote_sent"];

/// Runs deals one after another until `stop` is set; the deal in progress is left where it is.
pub async fn worker(load: Load, mut rng: Rng, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut deal) = open_deal(&load, &mut rng).await else {
            continue;
        };
        for _ in 0..rng.between(3, 10) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(rng.between(50, 800))).await;
            if !step(&load, &mut rng, &mut deal).await {
                break;
            }
        }
    }
}

fn close_date(rng: &mut Rng) -> NaiveDate {
    let today = Utc::now().date_naive();
    // One deal in five is already past its close date, so `close-date-passed` fires too.
    if rng.chance(20) {
        today - TimeDelta::days(rng.between(2, 60) as i64)
    } else {
        today + TimeDelta::days(rng.between(10, 200) as i64)
    }
}

/// A new deal: captured as a lead and qualified, or created directly. `None` when the lead was
/// disqualified or a command did not go through.
async fn open_deal(load: &Load, rng: &mut Rng) -> Option<Deal> {
    let number = rng.between(1, 1_000_000);
    let currency = if rng.chance(50) { "EUR" } else { "USD" };
    let amount = rng.between(1_000, 5_000_000) as i64;
    let close_date = close_date(rng);
    if rng.chance(20) {
        let owner = OWNERS[rng.below(OWNERS.len())];
        let answer = load
            .command(
                "/v1/opportunities".to_owned(),
                json!({
                    "name": format!("Direct deal {number}"),
                    "amount": amount,
                    "currency": currency,
                    "expected_close_date": close_date.to_string(),
                    "owner": owner,
                }),
                false,
            )
            .await?;
        return Some(Deal {
            id: answer["id"].as_str()?.to_owned(),
            currency,
            amount,
            close_date,
            in_negotiation: false,
            closed: false,
            owner: Some(owner),
        });
    }
    let mut lead = json!({
        "name": format!("Lead {number}"),
        "company": format!("Company {number}"),
        "email": format!("lead{number}@example.com"),
        "source": "web",
    });
    if let Some(country) = COUNTRIES[rng.below(COUNTRIES.len())] {
        lead["country"] = json!(country);
    }
    let answer = load.command("/v1/leads".to_owned(), lead, false).await?;
    let lead_id = answer["id"].as_str()?.to_owned();
    tokio::time::sleep(Duration::from_millis(rng.between(0, 300))).await;
    if rng.chance(10) {
        load.command(
            format!("/v1/leads/{lead_id}/disqualify"),
            json!({ "reason": "no budget this year" }),
            false,
        )
        .await;
        return None;
    }
    let answer = load
        .command(
            format!("/v1/leads/{lead_id}/qualify"),
            json!({
                "criteria": { "budget": true, "authority": rng.chance(50), "need": true, "timeline": true },
                "opportunity": {
                    "name": format!("Deal {number}"),
                    "amount": amount,
                    "currency": currency,
                    "expected_close_date": close_date.to_string(),
                },
            }),
            false,
        )
        .await?;
    Some(Deal {
        id: answer["opportunity_id"].as_str()?.to_owned(),
        currency,
        amount,
        close_date,
        in_negotiation: false,
        closed: false,
        owner: None,
    })
}

/// One thing done to the deal; false when the deal is finished with (left closed, or a command
/// did not go through).
async fn step(load: &Load, rng: &mut Rng, deal: &mut Deal) -> bool {
    let base = format!("/v1/opportunities/{}", deal.id);
    if deal.closed {
        // Some deals stay closed for good, the others are reopened.
        if rng.chance(40) {
            return false;
        }
        let (body, in_negotiation) = match rng.below(3) {
            0 => (json!({}), false),
            1 => (json!({ "stage": "contacted" }), false),
            _ => (json!({ "stage": "negotiation" }), true),
        };
        let reopened = load.command(format!("{base}/reopen"), body, false).await;
        deal.closed = false;
        deal.in_negotiation = in_negotiation;
        return reopened.is_some();
    }
    let roll = rng.below(100);
    let answered = match roll {
        0..=34 => {
            let kind = ACTIVITIES[rng.below(ACTIVITIES.len())];
            load.command(
                format!("{base}/activities"),
                json!({ "kind": kind, "summary": format!("{kind} with the buyer") }),
                false,
            )
            .await
        }
        35..=54 => {
            let stage = if deal.in_negotiation {
                "contacted"
            } else {
                "negotiation"
            };
            deal.in_negotiation = !deal.in_negotiation;
            load.command(
                format!("{base}/stage"),
                json!({ "stage": stage, "reason": "chaos load" }),
                false,
            )
            .await
        }
        55..=61 => {
            deal.amount += rng.between(1, 100_000) as i64;
            load.command(
                format!("{base}/amount"),
                json!({ "amount": deal.amount, "currency": deal.currency }),
                false,
            )
            .await
        }
        62..=66 => {
            deal.close_date += TimeDelta::days(rng.between(1, 40) as i64);
            load.command(
                format!("{base}/close-date"),
                json!({ "expected_close_date": deal.close_date.to_string() }),
                false,
            )
            .await
        }
        67..=71 => {
            let owner = OWNERS
                .into_iter()
                .filter(|owner| Some(*owner) != deal.owner)
                .nth(rng.below(OWNERS.len() - 1))
                .unwrap_or(OWNERS[0]);
            deal.owner = Some(owner);
            load.command(format!("{base}/owner"), json!({ "owner": owner }), false)
                .await
        }
        72..=75 => {
            load.command(
                format!("{base}/probability"),
                json!({ "probability": rng.between(5, 95) }),
                true,
            )
            .await
        }
        76..=91 => {
            deal.closed = true;
            let body = if rng.chance(50) {
                json!({ "outcome": "won" })
            } else {
                json!({ "outcome": "lost", "reason": "went with a competitor" })
            };
            load.command(format!("{base}/close"), body, false).await
        }
        _ => {
            let path = match rng.below(4) {
                0 => base.clone(),
                1 => format!("{base}/history"),
                2 => "/v1/pipelines/default/board".to_owned(),
                _ => "/v1/forecast?period=quarter".to_owned(),
            };
            load.query(path).await;
            Some(Value::Null)
        }
    };
    answered.is_some()
}
