//! The web UI: the same page at every UI path (`/graph`, `/alerts`, …), whose script renders
//! the page its path names, and the script and style sheet, bundled from `ui/` by the build
//! script and embedded in the binary (nothing is read from disk at run time). The bundle is
//! built with the `ui` feature, which the `promflow` binary turns on: the library alone builds
//! without Node.js.

use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The bundled script (`ui/src/main.js` and the npm packages it imports).
#[cfg(feature = "ui")]
const APP_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.js"));
/// The bundled style sheet (`ui/src/style.css` and uPlot's).
#[cfg(feature = "ui")]
const APP_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.css"));
/// Built without the `ui` feature (the library's own tests, which need no npm): the page
/// says so in place of the script.
#[cfg(not(feature = "ui"))]
const APP_JS: &[u8] =
    b"document.body.textContent = 'promflow was built without its web UI (the ui feature).';";
#[cfg(not(feature = "ui"))]
const APP_CSS: &[u8] = b"";

/// The paths of the UI's pages.
pub(crate) const PAGES: [&str; 10] = [
    "/graph",
    "/alerts",
    "/rules",
    "/targets",
    "/status",
    "/sql",
    "/tsdb-status",
    "/flags",
    "/config",
    "/service-discovery",
];

/// The page: relative asset paths, so that it works under `--web.route-prefix` as is.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="assets/app.css">
</head>
<body>
<noscript>promflow's web UI needs JavaScript; the HTTP API is under api/v1/.</noscript>
<script src="assets/app.js" defer></script>
</body>
</html>
"#;

/// The UI's routes; `prefix` is the route prefix without its trailing `/` (empty for none),
/// for the redirect from `/` to the graph page, and `title` the pages' `<title>`
/// (`--web.page-title`).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(prefix: &str, title: &str) -> Router<S> {
    let graph = format!("{prefix}/graph");
    // `--web.page-title`, escaped for HTML text
    let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page: std::sync::Arc<str> = PAGE.replace("{title}", &title).into();
    let mut router = Router::new()
        .route("/", get(move || async move { Redirect::to(&graph) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }));
    for path in PAGES {
        let page = std::sync::Arc::clone(&page);
        router = router.route(path, get(move || async move { Html(page.to_string()) }));
    }
    router
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    // no file name changes with the content, so the browser asks again (a 304 is cheap)
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
