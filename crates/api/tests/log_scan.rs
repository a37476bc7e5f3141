//! No secret in any log line: a whole run of the API with good and bad tokens, logged at the most
//! verbose level, is scanned for them. A binary of its own, since the subscriber it installs is
//! the process's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::auth::Role;
use reqwest::Method;
use serde_json::json;

#[allow(dead_code)]
#[path = "it/helpers.rs"]
mod helpers;

use helpers::TestApp;

/// Collects everything the process logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of a run with good, bad, unknown, expired and revoked tokens, at the most
/// verbose level, is scanned for the tokens: none may appear, nor any token-looking text.
#[tokio::test]
async fn no_token_appears_in_any_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global, so that every thread's events reach it whatever else registered first: this test
    // binary holds this one test.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let app = TestApp::spawn().await;
    let rep = app.token("rita", Role::Rep).await;
    let expired = api::auth::create_token(app.pool(), "old", Role::Viewer, Some(Duration::ZERO))
        .await
        .expect("creating a token")
        .token;
    let revoked = app.token("gone", Role::Manager).await;
    let revoked_id = api::auth::list_tokens(app.pool())
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.actor == "gone")
        .unwrap()
        .id;
    api::auth::revoke_token(app.pool(), revoked_id)
        .await
        .unwrap();
    let unknown = format!("dst_{}", "Q".repeat(43));
    let deal = app.create_deal().await;
    for (token, path) in [
        (&app.admin_token, format!("/v1/opportunities/{deal}/stage")),
        (&rep, format!("/v1/opportunities/{deal}/stage")),
        (&expired, "/v1/leads".to_owned()),
        (&revoked, "/v1/leads".to_owned()),
        (&unknown, "/v1/leads".to_owned()),
    ] {
        app.call(Method::POST, &path)
            .json(&json!({"stage": "contacted"}))
            .bearer(token)
            .send()
            .await;
        app.call(Method::POST, &path)
            .json(&json!({"stage": "contacted"}))
            .authorization(Some(&format!("Basic {token}")))
            .send()
            .await;
    }
    drop(app);
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("request refused"),
        "the refusals were not captured; the scan would prove nothing:\n{log}"
    );
    for secret in [&rep, &expired, &revoked, &unknown] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the log:\n{log}"
        );
        assert!(
            !log.contains(&secret[4..]),
            "a token's secret is in the log"
        );
    }
    assert!(
        !log.contains("dst_"),
        "token-looking text is in the log:\n{log}"
    );
}
