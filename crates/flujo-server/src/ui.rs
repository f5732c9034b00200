//! The embedded web UI: a hash-routed single page (`ui/index.html`, `ui/app.js`, `ui/style.css`) compiled
//! into the binary with `include_str!`, so `flujo serve` needs no asset folder and fetches nothing from
//! anywhere. The page talks only to the JSON API of the same server (docs/web-ui.md).
//!
//! Every asset is sent with `Cache-Control: no-cache` (a new binary's UI is picked up at once) and a strict
//! `Content-Security-Policy`: scripts, styles, images and connections from the same origin only, no inline
//! script or style, no frames, no plugins. The script builds every element with the DOM API and puts API data
//! in text nodes, so the policy costs it nothing.

use axum::http::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's HTML shell.
const INDEX_HTML: &str = include_str!("../ui/index.html");
/// The application (an ES module).
const APP_JS: &str = include_str!("../ui/app.js");
/// The stylesheet.
const STYLE_CSS: &str = include_str!("../ui/style.css");
/// The favicon.
const FAVICON_SVG: &str = include_str!("../ui/favicon.svg");

/// The Content-Security-Policy of every UI response.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The UI's routes: `/` (the page), `/ui/app.js`, `/ui/style.css` and `/ui/favicon.svg`. The host merges
/// this router into its own; it needs no state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/ui/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

/// One embedded asset with its content type and the UI's security and caching headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Serves the UI router alone on 127.0.0.1 and returns its base URL.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router::<()>()).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn serves_each_asset_with_its_type_and_the_security_headers() {
        let base = serve().await;
        let client = flujo_http::client_builder().build().unwrap();
        for (path, ty, marker) in [
            ("/", "text/html; charset=utf-8", "<script type=\"module\" src=\"/ui/app.js\">"),
            ("/ui/app.js", "text/javascript; charset=utf-8", "function route()"),
            ("/ui/style.css", "text/css; charset=utf-8", ".badge"),
            ("/ui/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let res = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            let h = res.headers().clone();
            assert_eq!(h[CONTENT_TYPE], ty, "{path}");
            assert_eq!(h[CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(h[CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY_VALUE, "{path}");
            assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            let body = res.text().await.unwrap();
            assert!(body.contains(marker), "{path} lacks {marker:?}");
        }
        let res = client.get(format!("{base}/ui/missing.js")).send().await.unwrap();
        assert_eq!(res.status(), 404);
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_nothing_from_elsewhere() {
        let csp = CONTENT_SECURITY_POLICY_VALUE;
        assert!(csp.starts_with("default-src 'self';"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(!csp.contains("http:") && !csp.contains("https:") && !csp.contains('*'));
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
    }

    #[test]
    fn the_page_loads_nothing_from_outside_and_has_no_inline_script() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("style.css", STYLE_CSS)] {
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} names an outside URL");
            assert!(!text.contains("innerHTML") && !text.contains("outerHTML"), "{name} writes raw HTML");
            assert!(!text.contains("eval("), "{name} evaluates code");
        }
        // The one script element has a src; no inline handlers or style attributes (the policy forbids them).
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(!INDEX_HTML.contains(" onclick=") && !INDEX_HTML.contains(" style="));
    }
}
