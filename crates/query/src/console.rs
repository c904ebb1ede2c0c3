//! The web console (README: the web console): the page, script and stylesheet built from `console/` by Vite,
//! embedded in the binary at build time and served under [`CONSOLE_PATH`] beside the gRPC services.
//!
//! The page reads everything through `hourglass.v1.QueryService` over gRPC-Web (the service is wrapped
//! in tonic-web's layer by [`add_query`](crate::add_query)), with the client generated from `proto/`:
//! there is no JSON API here, only three static files. They are committed in `console/dist/`, so a
//! build needs no Node; CI rebuilds them from the sources and fails if they differ (docs/architecture.md:
//! the web console). Same origin as the gRPC-Web calls, so no CORS is needed or offered.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the console is served: `http://<query service>/console/`.
pub const CONSOLE_PATH: &str = "/console/";

const INDEX_HTML: &[u8] = include_bytes!("../../../console/dist/index.html");
const CONSOLE_JS: &[u8] = include_bytes!("../../../console/dist/console.js");
const CONSOLE_CSS: &[u8] = include_bytes!("../../../console/dist/console.css");

/// Only this origin's script, styles and calls: the page needs no CDN and loads nothing else. uPlot
/// sizes its canvas through element styles, which `style-src` does not govern when set from script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, for [`GrpcServer::add_web_routes`](hourglass_grpc::GrpcServer::add_web_routes).
pub fn console_routes() -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent(CONSOLE_PATH) }))
        .route(CONSOLE_PATH, get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/console/index.html", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/console/console.js", get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
        .route("/console/console.css", get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
}

/// One embedded file. `no-cache`: the browser revalidates, so the page always matches the binary that
/// serves it (the file names carry no content hash).
fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tonic::codegen::Service;

    use super::*;

    async fn get_path(path: &str) -> Response {
        let mut routes = console_routes();
        let request = Request::get(path).body(Body::empty()).expect("a valid request");
        routes.call(request).await.expect("the router is infallible")
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("an in-memory body");
        String::from_utf8(bytes.to_vec()).expect("UTF-8")
    }

    #[tokio::test]
    async fn the_page_loads_its_own_script_and_stylesheet_only() {
        let page = get_path(CONSOLE_PATH).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        let html = body_text(page).await;
        assert!(html.contains(r#"src="/console/console.js""#), "{html}");
        assert!(html.contains(r#"href="/console/console.css""#), "{html}");
        assert!(!html.contains("http://") && !html.contains("https://"), "the page loads nothing from elsewhere");

        for (path, content_type) in [
            ("/console/console.js", "text/javascript; charset=utf-8"),
            ("/console/console.css", "text/css; charset=utf-8"),
        ] {
            let asset = get_path(path).await;
            assert_eq!(asset.status(), StatusCode::OK, "{path}");
            assert_eq!(asset.headers()[header::CONTENT_TYPE], content_type, "{path}");
            assert!(!body_text(asset).await.is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn the_bare_path_redirects_and_other_paths_are_not_found() {
        let redirect = get_path("/console").await;
        assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], CONSOLE_PATH);
        assert_eq!(get_path("/console/secrets.txt").await.status(), StatusCode::NOT_FOUND);
    }
}
