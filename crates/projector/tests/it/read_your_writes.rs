//! A command followed at once by a query with its `min_position` sees the change, through the API.

use std::net::SocketAddr;

use platform::CancellationToken;
use serde_json::{Value, json};

use crate::support::{Harness, history::text};

pub async fn spawn_api(harness: &Harness) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let state = api::AppState::new(harness.handler.clone(), text("unassigned"));
    tokio::spawn(api::serve(listener, state, shutdown.clone()));
    (address, shutdown)
}

/// An HTTP client that sends a manager's token of the harness's store with every request.
pub async fn api_client(harness: &Harness) -> reqwest::Client {
    let token = api::auth::create_token(&harness.db.pool, "tester", api::auth::Role::Manager, None)
        .await
        .expect("creating a token")
        .token;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_min_position_sees_the_command() {
    let harness = Harness::new().await;
    let publisher = harness.publisher();
    let projector = harness.projector(None);
    let (address, api_shutdown) = spawn_api(&harness).await;
    let client = api_client(&harness).await;
    let url = |path: &str| format!("http://{address}{path}");

    for round in 0..5 {
        let created: Value = client
            .post(url("/v1/opportunities"))
            .json(&json!({
                "name": format!("deal {round}"), "amount": 1000, "currency": "EUR",
                "expected_close_date": "2026-12-15", "owner": "alice"
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        let moved: Value = client
            .post(url(&format!("/v1/opportunities/{id}/stage")))
            .json(&json!({"stage": "negotiation"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let position = moved["position"].as_i64().unwrap();

        let list: Value = client
            .get(url(&format!(
                "/v1/opportunities?stage=negotiation&owner=alice&min_position={position}&limit=500"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = list["opportunities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|deal| deal["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&id.as_str()), "{list}");
        assert_eq!(ids.len(), round + 1);

        let board: Value = client
            .get(url(&format!(
                "/v1/pipelines/default/board?min_position={position}"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let stages: Vec<&str> = board["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|column| column["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["new", "contacted", "quoted", "negotiation"]);
        assert_eq!(
            board["columns"][3]["totals"],
            json!([{"currency": "EUR", "count": round + 1, "amount": 1000 * (round + 1),
                    "weighted_amount": 750 * (round + 1)}])
        );

        let forecast: Value = client
            .get(url(&format!(
                "/v1/forecast?period=quarter&min_position={position}"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(forecast["period"], "quarter");
        assert_eq!(forecast["rows"][0]["period"], "2026-Q4");
        assert_eq!(forecast["rows"][0]["commit"], json!(1000 * (round + 1)));

        let deal: Value = client
            .get(url(&format!(
                "/v1/opportunities/{id}?min_position={position}"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(deal["stage"], "negotiation");
        assert_eq!(deal["version"], 2);
    }

    // Cursor pagination walks every deal exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/opportunities?limit=2".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client
            .get(url(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for deal in page["opportunities"].as_array().unwrap() {
            seen.push(deal["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5);

    // Bad parameters are problems, never 500; a position beyond the store's head can never be
    // reached, so it is refused at once.
    for (path, status) in [
        ("/v1/opportunities?limit=0", 422),
        ("/v1/opportunities?limit=abc", 400),
        ("/v1/opportunities?cursor=nonsense", 400),
        ("/v1/opportunities?status=maybe", 422),
        ("/v1/opportunities?bogus=1", 400),
        ("/v1/forecast?period=week", 422),
        ("/v1/follow-ups?status=done", 422),
        ("/v1/opportunities?min_position=-1", 422),
        ("/v1/pipelines/nope/board", 404),
        ("/v1/forecast?min_position=999999999", 422),
    ] {
        let reply = client.get(url(path)).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), status, "{path}");
        assert_eq!(
            reply.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let api = api::AppState::new(harness.handler.clone(), text("unassigned"))
        .with_read_your_writes_wait(std::time::Duration::from_millis(200));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let short = listener.local_addr().unwrap();
    tokio::spawn(api::serve(listener, api, api_shutdown.clone()));
    // A committed position the read model has not applied (nothing publishes it any more) is
    // waited for, then answered 503 with Retry-After.
    publisher.stop().await;
    let unpublished: Value = client
        .post(format!("http://{short}/v1/opportunities"))
        .json(&json!({
            "name": "Never published", "amount": 100, "currency": "EUR",
            "expected_close_date": "2027-01-31", "owner": "anna"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reply = client
        .get(format!(
            "http://{short}/v1/forecast?min_position={}",
            unpublished["position"]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 503);
    assert!(reply.headers().contains_key("retry-after"));

    api_shutdown.cancel();
    projector.stop().await.unwrap();
    harness.finish().await;
}
