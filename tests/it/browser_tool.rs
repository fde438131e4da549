//! The browser tool driving a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/ci-services.sh`) over CDP, on pages this test serves: a page read, a form
//! filled and submitted, a script evaluated, a screenshot, links listed, each call in a
//! fresh context (no cookie carried over); and a platform that keeps tools off private
//! networks refusing to load a page from one.

use axum::Router;
use axum::extract::Form;
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, with_root_on};
use crate::lifecycle::call;

/// Chromium where the tool looks for it; under `CI=true` it must be there.
fn chromium_installed() -> bool {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    assert!(
        found || !somagent_common::testing::in_ci(),
        "CI=true but Chromium is not installed: scripts/ci-services.sh installs it"
    );
    if !found {
        eprintln!("Chromium is not installed: the browser tool's journey does not run here");
    }
    found
}

async fn site() -> String {
    async fn home(headers: HeaderMap) -> ([(&'static str, &'static str); 1], Html<String>) {
        let cookie = headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        (
            [("set-cookie", "visited=yes; Path=/")],
            Html(format!(
                "<!doctype html><html><head><title>Acme Status</title></head><body>\
                 <h1>All systems normal</h1><p id=cookie>cookie: {cookie}</p>\
                 <a href=\"/incidents\">Incidents</a> <a href=\"https://example.org/docs\">Docs</a>\
                 <form method=post action=\"/subscribe\"><input id=email name=email>\
                 <button id=go type=submit>Subscribe</button></form>\
                 <script>document.title = document.title + ' (3 services)';</script></body></html>"
            )),
        )
    }
    async fn subscribe(Form(form): Form<Vec<(String, String)>>) -> Html<String> {
        let email = form
            .iter()
            .find(|(k, _)| k == "email")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Html(format!(
            "<!doctype html><title>Subscribed</title><p>Subscribed {email}</p>"
        ))
    }
    let app = Router::new()
        .route("/", get(home))
        .route("/subscribe", axum::routing::post(subscribe));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn browse(r: &Rooted, action: &str, arguments: Value) -> (u16, Value) {
    call(
        &r.client,
        Method::POST,
        &format!("{}/v1/tools/playwright/invoke", r.gateway),
        &r.root,
        Some(json!({"action": action, "arguments": arguments})),
    )
    .await
}

#[tokio::test]
async fn the_browser_tool_drives_chromium_on_served_pages() {
    if !chromium_installed() {
        return;
    }
    let page = site().await;
    let r = with_root_on(
        Backends::Embedded,
        &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await;
    // Off until a tenant admin turns it on: a page runs scripts and reaches the web on
    // the tenant's behalf.
    let (status, _) = browse(&r, "open", json!({"url": format!("{page}/")})).await;
    assert_eq!(status, 404);
    let (status, enabled) = call(
        &r.client,
        Method::POST,
        &format!("{}/v1/tools", r.gateway),
        &r.root,
        Some(json!({"id": "playwright", "browser": {}})),
    )
    .await;
    assert_eq!(
        (status, enabled["kind"].as_str()),
        (201, Some("browser")),
        "{enabled}"
    );
    assert!(enabled.get("unavailable").is_none(), "{enabled}");

    let (status, opened) = browse(&r, "open", json!({"url": format!("{page}/")})).await;
    assert_eq!(status, 200, "{opened}");
    let result = &opened["result"];
    assert_eq!(
        result["title"], "Acme Status (3 services)",
        "scripts ran: {result}"
    );
    let text = result["text"].as_str().unwrap();
    assert!(text.contains("All systems normal"), "{text}");
    // A fresh context each call: the first visit's cookie is not sent again.
    let (_, again) = browse(&r, "open", json!({"url": format!("{page}/")})).await;
    assert!(
        again["result"]["text"]
            .as_str()
            .unwrap()
            .contains("cookie: none"),
        "{again}"
    );

    let (status, submitted) = browse(
        &r,
        "fill_form",
        json!({"url": format!("{page}/"), "fields": {"#email": "ann@example.com"}, "submit": "#go"}),
    )
    .await;
    assert_eq!(status, 200, "{submitted}");
    assert_eq!(submitted["result"]["title"], "Subscribed", "{submitted}");
    assert!(
        submitted["result"]["text"]
            .as_str()
            .unwrap()
            .contains("Subscribed ann@example.com")
    );

    let (_, evaluated) = browse(
        &r,
        "evaluate",
        json!({"url": format!("{page}/"), "expression": "document.querySelectorAll('a').length * 10"}),
    )
    .await;
    assert_eq!(evaluated["result"]["value"], 20, "{evaluated}");
    let (_, links) = browse(&r, "links", json!({"url": format!("{page}/")})).await;
    assert_eq!(
        links["result"]["links"][0],
        json!({"text": "Incidents", "href": format!("{page}/incidents")}),
        "{links}"
    );
    let (_, shot) = browse(&r, "screenshot", json!({"url": format!("{page}/")})).await;
    let png = data_encoding::BASE64
        .decode(shot["result"]["png_base64"].as_str().unwrap().as_bytes())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);

    // A selector that matches nothing is the caller's to fix, said plainly.
    let (status, failed) = browse(
        &r,
        "click",
        json!({"url": format!("{page}/"), "selector": "#nope"}),
    )
    .await;
    assert_eq!(status, 502, "{failed}");
    assert!(
        failed.to_string().contains("no element matches"),
        "{failed}"
    );
    let (status, _) = browse(&r, "open", json!({"url": "file:///etc/passwd"})).await;
    assert_eq!(status, 422);

    // Where tools are kept off private networks, a page on one does not load.
    let kept = with_root_on(Backends::Embedded, &[]).await;
    call(
        &kept.client,
        Method::POST,
        &format!("{}/v1/tools", kept.gateway),
        &kept.root,
        Some(json!({"id": "playwright", "browser": {}})),
    )
    .await;
    let (status, refused) = browse(&kept, "open", json!({"url": format!("{page}/")})).await;
    assert_eq!(status, 502, "{refused}");
    assert!(refused.to_string().contains("private network"), "{refused}");
}
