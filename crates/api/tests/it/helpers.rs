//! The harness: an in-process API on port 0 over a private schema, a reqwest client, and the
//! assertions every test shares. Every response passes through [`Call::send`], which panics on a
//! 5xx unless the test explicitly expects a 503, so no test can pass while the server fails.

use std::net::SocketAddr;
use std::sync::Arc;

use api::auth::Role;
use commands::{CommandContext, CommandHandler, OpportunityRequest, SystemClock};
use domain::opportunity::OpportunityCommand;
use domain::values::{FollowUpId, FollowUpKind, OpportunityId, Text, parse_owner};
use eventstore::{EventStore, RecordedEvent};
use platform::CancellationToken;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::TestDb;
use tokio::net::TcpListener;
use uuid::Uuid;

/// The actor of the token every call sends by default.
pub const ACTOR: &str = "tester";

pub const DEFAULT_STAGES: [&str; 4] = ["new", "contacted", "quoted", "negotiation"];

pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    /// The store the API writes to, for checking what was appended.
    pub store: EventStore,
    /// The handler behind the API, for commands no endpoint offers (such as scheduling a
    /// follow-up, which only the workflow service does).
    pub handler: CommandHandler,
    /// The bearer token every call sends unless it says otherwise: an admin's, actor [`ACTOR`].
    pub admin_token: String,
    token: CancellationToken,
    /// Declared last so that the schema is dropped after the server was told to stop.
    _db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl TestApp {
    /// A follow-up on `deal`, scheduled as the workflow's first-contact rule would; its id.
    pub async fn schedule_follow_up(&self, deal: &str) -> Uuid {
        let follow_up = Uuid::now_v7();
        self.handler
            .handle_opportunity(
                &CommandContext::new("workflow:first-contact"),
                OpportunityId(Uuid::parse_str(deal).unwrap()),
                OpportunityRequest::Other(OpportunityCommand::ScheduleFollowUp {
                    follow_up_id: FollowUpId(follow_up),
                    kind: FollowUpKind::parse("first-contact").unwrap(),
                    due_at: chrono::Utc::now() + chrono::Duration::days(1),
                    rule: Text::parse("rule", "first-contact", Text::SHORT).unwrap(),
                }),
            )
            .await
            .expect("scheduling a follow-up");
        follow_up
    }

    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|state| state).await
    }

    /// Lets a test adjust the state before the server starts (for example to add a readiness
    /// check that fails).
    pub async fn spawn_with(configure: impl FnOnce(api::AppState) -> api::AppState) -> TestApp {
        platform::init_test_tracing();
        let db = TestDb::new().await;
        let store = EventStore::new(db.pool.clone());
        let handler = CommandHandler::new(store.clone(), Arc::new(SystemClock));
        handler
            .ensure_default_pipeline()
            .await
            .expect("defining the default pipeline");
        let owner = parse_owner("unassigned").expect("a valid owner");
        let state = configure(api::AppState::new(handler.clone(), owner));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding port 0");
        let address: SocketAddr = listener.local_addr().expect("a bound address");
        let admin_token = api::auth::create_token(&db.pool, ACTOR, Role::Admin, None)
            .await
            .expect("creating the harness's token")
            .token;
        let token = CancellationToken::new();
        tokio::spawn(api::serve(listener, state, token.clone()));
        TestApp {
            base_url: format!("http://{address}"),
            client: reqwest::Client::new(),
            store,
            handler,
            admin_token,
            token,
            _db: db,
        }
    }

    /// The driver configuration of this test's schema, for connections outside the pool (the
    /// relay's LISTEN connection).
    pub fn database_config(&self) -> tokio_postgres::Config {
        self._db.config().clone()
    }

    /// A new bearer token for `actor` with `role` in this test's store.
    pub async fn token(&self, actor: &str, role: Role) -> String {
        api::auth::create_token(&self._db.pool, actor, role, None)
            .await
            .expect("creating a token")
            .token
    }

    /// The pool of this test's schema, for the token functions.
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self._db.pool
    }

    /// A request that carries the admin token unless [`Call::bearer`] or
    /// [`Call::authorization`] replace it.
    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            builder: self
                .client
                .request(method, format!("{}{path}", self.base_url)),
            authorization: Some(format!("Bearer {}", self.admin_token)),
            allow_unavailable: false,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path).send().await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path).json(body).send().await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.call(Method::POST, path).raw(body).send().await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::PUT, path).json(body).send().await
    }

    /// POSTs `body` with `Transfer-Encoding: chunked` over a plain TCP connection (the client
    /// here cannot stream bodies) and returns the status, the response head and the body. The
    /// server may answer before it has read everything, so write errors are ignored.
    pub async fn chunked_post(&self, path: &str, body: &[u8]) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.base_url.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connecting to the API");
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
             authorization: Bearer {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            self.admin_token
        );
        let body = body.to_vec();
        let writing = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            for chunk in body.chunks(64 * 1024) {
                writer
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                writer.write_all(chunk).await?;
                writer.write_all(b"\r\n").await?;
            }
            writer.write_all(b"0\r\n\r\n").await?;
            writer.flush().await
        });
        let mut response = Vec::new();
        // A reset after the answer arrived is fine: the answer is what is checked.
        let _ = reader.read_to_end(&mut response).await;
        let _ = writing.await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP response: {response:?}"));
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        assert!(status < 500, "server error {status}: {body}");
        (status, head.to_owned(), body.to_owned())
    }

    /// Captures a lead and returns its id.
    pub async fn capture_lead(&self) -> String {
        let reply = self
            .post(
                "/v1/leads",
                &json!({"name": "Ada Lovelace", "company": "Analytical"}),
            )
            .await;
        reply.assert_status(201);
        reply.id()
    }

    /// Creates a deal in the default pipeline and returns its id.
    pub async fn create_deal(&self) -> String {
        self.create_deal_with(deal_body()).await
    }

    pub async fn create_deal_with(&self, body: Value) -> String {
        let reply = self.post("/v1/opportunities", &body).await;
        reply.assert_status(201);
        reply.id()
    }

    /// Creates a deal and closes it as won.
    pub async fn create_won_deal(&self) -> String {
        let id = self.create_deal().await;
        self.post(
            &format!("/v1/opportunities/{id}/close"),
            &json!({"outcome": "won"}),
        )
        .await
        .assert_status(200);
        id
    }

    pub async fn deal(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/opportunities/{id}")).await;
        reply.assert_status(200);
        reply.json()
    }

    pub async fn deal_version(&self, id: &str) -> i64 {
        self.deal(id).await["version"]
            .as_i64()
            .expect("version is an integer")
    }

    pub async fn stream(&self, stream_id: &str) -> Vec<RecordedEvent> {
        self.store
            .read_stream(stream_id)
            .await
            .expect("reading a stream")
    }

    /// Every event in this test's store, oldest first.
    pub async fn all_events(&self) -> Vec<RecordedEvent> {
        self.store
            .read_all(0, 100_000, None)
            .await
            .expect("reading the log")
    }

    pub async fn event_count(&self) -> usize {
        self.all_events().await.len()
    }
}

pub struct Call {
    builder: reqwest::RequestBuilder,
    /// The `Authorization` header, sent as given; `None` sends none.
    authorization: Option<String>,
    allow_unavailable: bool,
}

impl Call {
    /// Sends `token` instead of the admin's.
    pub fn bearer(self, token: &str) -> Call {
        self.authorization(Some(&format!("Bearer {token}")))
    }

    /// Sends this `Authorization` header instead of the admin's token, or none.
    pub fn authorization(mut self, value: Option<&str>) -> Call {
        self.authorization = value.map(str::to_owned);
        self
    }

    pub fn json(mut self, body: &Value) -> Call {
        self.builder = self.builder.json(body);
        self
    }

    /// A body sent exactly as given, labelled as JSON.
    pub fn raw(mut self, body: impl Into<reqwest::Body>) -> Call {
        self.builder = self
            .builder
            .header("content-type", "application/json")
            .body(body);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.builder = self.builder.header(name, value);
        self
    }

    /// A header value given as raw bytes, for values that are not visible ASCII.
    pub fn header_bytes(mut self, name: &str, value: &'static [u8]) -> Call {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn if_match(self, version: i64) -> Call {
        self.header("if-match", &version.to_string())
    }

    pub fn idempotency_key(self, key: &str) -> Call {
        self.header("idempotency-key", key)
    }

    /// This request may be answered 503 (every other 5xx still fails the test).
    pub fn allow_unavailable(mut self) -> Call {
        self.allow_unavailable = true;
        self
    }

    pub async fn send(self) -> Reply {
        let builder = match &self.authorization {
            Some(value) => self.builder.header("authorization", value),
            None => self.builder,
        };
        let response = builder
            .send()
            .await
            .unwrap_or_else(|error| panic!("request failed: {error:?}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the response body");
        let reply = Reply {
            status,
            headers,
            text,
        };
        let expected_unavailable =
            self.allow_unavailable && status == StatusCode::SERVICE_UNAVAILABLE;
        if status.is_server_error() && !expected_unavailable {
            panic!("server error {status}: {}", reply.text);
        }
        reply
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.text))
    }

    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Reply {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Asserts a command answer (`{id, version, position}`) with this status and returns it.
    #[track_caller]
    pub fn command_answer(&self, status: u16) -> Value {
        self.assert_status(status);
        let body = self.json();
        assert!(body["id"].is_string(), "id missing: {body}");
        assert!(body["version"].is_i64(), "version missing: {body}");
        assert!(body["position"].is_i64(), "position missing: {body}");
        body
    }

    pub fn id(&self) -> String {
        self.json()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.text))
            .to_owned()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status whose detail contains every fragment
    /// (compared case-insensitively), and returns the detail.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, detail_fragments: &[&str]) -> String {
        self.assert_status(status);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "not a problem: {}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["status"], json!(status), "problem status: {body}");
        assert!(
            body["type"].as_str().is_some_and(|kind| !kind.is_empty()),
            "problem type: {body}"
        );
        assert!(
            body["title"]
                .as_str()
                .is_some_and(|title| !title.is_empty()),
            "problem title: {body}"
        );
        let detail = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("problem without detail: {body}"))
            .to_owned();
        let lower = detail.to_lowercase();
        for fragment in detail_fragments {
            assert!(
                lower.contains(&fragment.to_lowercase()),
                "detail {detail:?} does not mention {fragment:?}"
            );
        }
        detail
    }
}

impl Reply {
    /// Asserts a 409 whose detail names the stream's actual and the expected version.
    #[track_caller]
    pub fn assert_version_conflict(&self, actual: i64, expected: i64) {
        self.assert_problem(
            409,
            &[
                &format!("version {actual}"),
                &format!("expected {expected}"),
            ],
        );
    }
}

/// A valid body for `POST /v1/opportunities`.
pub fn deal_body() -> Value {
    json!({
        "name": "Acme renewal",
        "amount": 120_000,
        "currency": "EUR",
        "expected_close_date": "2026-12-15",
        "owner": "alice",
    })
}

/// A valid body for `POST /v1/leads/{id}/qualify` with the given BANT answers.
pub fn qualify_body(budget: bool, authority: bool, need: bool, timeline: bool) -> Value {
    json!({
        "criteria": {"budget": budget, "authority": authority, "need": need, "timeline": timeline},
        "opportunity": {
            "name": "Analytical engine",
            "amount": 50_000,
            "currency": "GBP",
            "expected_close_date": "2027-03-31",
        },
    })
}

/// The `event_type` of each event, in order.
pub fn event_types(events: &[RecordedEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect()
}

/// A UUID v7 that no test ever creates an entity with.
pub fn unknown_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
