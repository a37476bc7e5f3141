//! The page for people at `/`: the board, the forecast chart, the time slider, a deal's timeline
//! and the work queue, drawn in the browser from the public `/v1` API only.
//!
//! The files under `crates/api/web/` are compiled into the binary, so the serving machine needs
//! no build step, no Node.js and no file next to the binary. They are plain ES modules, CSS and
//! SVG written by hand; the page has no framework and no charting library, so nothing is fetched
//! from elsewhere and the Content-Security-Policy below can allow this origin only. These routes
//! carry no data and need no token: the page asks for one and sends it on its own `/v1` calls.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ApiError;

/// A file of the page: its name under `/web/`, its media type and its text.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../web/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
    },
    Asset {
        name: "api.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/api.js"),
    },
    Asset {
        name: "board.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/board.js"),
    },
    Asset {
        name: "forecast.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/forecast.js"),
    },
    Asset {
        name: "timeline.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/timeline.js"),
    },
    Asset {
        name: "queue.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/queue.js"),
    },
    Asset {
        name: "format.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/format.js"),
    },
    Asset {
        name: "style.css",
        media_type: "text/css; charset=utf-8",
        body: include_str!("../web/style.css"),
    },
    Asset {
        name: "favicon.svg",
        media_type: "image/svg+xml",
        body: include_str!("../web/favicon.svg"),
    },
];

/// Only this origin's scripts, styles and images, and calls to this origin's API: the page
/// renders names and summaries that clients typed, and this keeps any of them from running as
/// code even if a rendering path forgot to treat them as text.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's routes, to be merged into the API's router outside any authentication layer.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/web/{file}", get(asset))
}

async fn index() -> Response {
    served("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => served(asset.media_type, asset.body),
        None => ApiError::NotFound(format!("no file /web/{file}")).into_response(),
    }
}

fn served(media_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The files change with the binary, not by themselves: revalidating on every load keeps an
    // upgraded node from serving a page whose modules come from two versions.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn fetch(path: &str) -> Response {
        routes::<()>()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_page_and_its_files_are_served_with_their_types_and_policy() {
        let page = fetch("/").await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            header(&page, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            header(&page, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        for asset in ASSETS {
            let response = fetch(&format!("/web/{}", asset.name)).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            assert_eq!(header(&response, header::CONTENT_TYPE), asset.media_type);
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_problem() {
        let response = fetch("/web/missing.js").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "application/problem+json"
        );
    }

    /// Every module the page imports, and every file the page links, is one the router serves;
    /// a missing one would be a 404 in the browser and a page that never starts.
    #[test]
    fn every_referenced_file_is_served() {
        let sources = std::iter::once(INDEX).chain(ASSETS.iter().map(|asset| asset.body));
        let mut referenced = Vec::new();
        for source in sources {
            for piece in source.split(['"', '\'']) {
                if let Some(name) = piece.strip_prefix("/web/") {
                    referenced.push(name.to_owned());
                } else if let Some(name) = piece.strip_prefix("./")
                    && name.ends_with(".js")
                {
                    referenced.push(name.to_owned());
                }
            }
        }
        assert!(referenced.iter().any(|name| name == "app.js"));
        for name in &referenced {
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "{name} is referenced but not served"
            );
        }
    }
}
