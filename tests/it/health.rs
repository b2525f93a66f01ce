use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_answer_ok_on_a_running_service() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = http_get(app.http(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok", "{path}");
    }
}

#[tokio::test]
async fn unknown_routes_answer_a_json_404() {
    let app = spawn_app().await;
    let response = http_get(app.http("/nope")).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "not_found");
}

#[tokio::test]
async fn the_demo_page_is_served_only_when_turned_on() {
    let on = spawn_app_with(|s| s.server.demo = true).await;
    let page = http_get(on.http("/demo")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/demo/phoenix.min.js"));
    let client = http_get(on.http("/demo/phoenix.min.js")).await.unwrap();
    assert_eq!(client.status(), 200);
    assert!(client.text().await.unwrap().contains("Phoenix"));

    let off = spawn_app().await;
    for path in ["/demo", "/demo/phoenix.min.js"] {
        let response = http_get(off.http(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}
