//! The OpenAPI document and /metrics.

use serde_json::{Value, json};

use crate::helpers::*;

/// Every (method, path) the route tables in src/http/routes.rs register.
fn registered_routes() -> Vec<(String, String)> {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/routes.rs"))
            .unwrap();
    let compact: String = source.split_whitespace().collect();
    let mut routes = Vec::new();
    for piece in compact.split(".route(\"").skip(1) {
        let (path, rest) = piece.split_once('"').unwrap();
        let method = rest
            .trim_start_matches(',')
            .trim_start_matches("web::")
            .split('(')
            .next()
            .unwrap()
            .to_string();
        routes.push((method, path.to_string()));
    }
    assert!(routes.len() > 10, "parsed {routes:?}");
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let response = http_get(app.http("/api/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in registered_routes() {
        assert!(
            doc["paths"][&path][&method].is_object(),
            "{method} {path} is missing from the OpenAPI document"
        );
    }
    let message = &doc["components"]["schemas"]["Message"]["properties"];
    for field in [
        "id",
        "topic",
        "user_id",
        "body",
        "meta",
        "kind",
        "status",
        "client_ref",
        "sent_at",
        "edited_at",
        "is_delivered",
    ] {
        assert!(message.get(field).is_some(), "Message.{field}");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn metrics_count_connections_joins_messages_batches_and_errors() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "one").await;
    alice.send_msg("chat:alice:bob", "two").await;
    let refused = alice.join("chat:bob:carol", json!({})).await;
    assert_eq!(refused["response"]["reason"], "unauthorized");

    let response = http_get(app.http("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("sidechat_connections"), 1.0);
    assert_eq!(value("sidechat_channels"), 1.0);
    assert_eq!(value("sidechat_joins_total"), 1.0);
    assert_eq!(
        value("sidechat_join_seconds_count{kind=\"conversation\"}"),
        1.0
    );
    assert!(value("sidechat_join_seconds_sum{kind=\"conversation\"}") > 0.0);
    assert_eq!(value("sidechat_messages_in_total"), 2.0);
    assert!(value("sidechat_messages_out_total") >= 2.0);
    assert_eq!(value("sidechat_writer_batch_size_count"), 2.0);
    assert!(value("sidechat_writer_batch_seconds_sum") > 0.0);
    assert_eq!(value("sidechat_writer_queue_depth"), 0.0);
    // The conversation, and the topic every replica hears block changes on.
    assert_eq!(value("sidechat_hub_topics"), 2.0);
    assert_eq!(value("sidechat_errors_total{reason=\"unauthorized\"}"), 1.0);
    assert_eq!(value("sidechat_ready"), 1.0);
    assert_eq!(value("sidechat_broker_connected"), 1.0);
    assert_eq!(value("sidechat_broker{kind=\"memory\"}"), 1.0);
}

/// The series names a `# TYPE` line in OpenMetrics text stands for.
fn exported_series(metrics: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

/// Every `sidechat_*` series `text` (PromQL) reads: its name, and the label values it
/// asks for literally (`outcome="abandoned"`; `=~`, `!=` and variables left out).
fn named_series(text: &str) -> Vec<(String, Vec<String>)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut named = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("sidechat_") {
        let preceded_by_word = rest[..at].chars().next_back().is_some_and(word);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
        if !preceded_by_word {
            let mut labels = Vec::new();
            if let Some(selector) = tail[end..].strip_prefix('{') {
                let selector = &selector[..selector.find('}').unwrap_or(0)];
                for matcher in selector.split(',') {
                    if let Some((key, value)) = matcher.split_once('=')
                        && !key.ends_with('!')
                        && !value.starts_with('~')
                        && !value.contains('$')
                    {
                        labels.push(format!("{}={}", key.trim(), value.trim()));
                    }
                }
            }
            named.push((tail[..end].to_string(), labels));
        }
        rest = &tail[end..];
    }
    named
}

/// The dashboard and the alert rules in deploy/ read only series this build exports: a
/// renamed metric would leave a panel empty or an alert silent, with nothing to say so.
#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let app = spawn_app().await;
    let metrics = http_get(app.internal_http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = exported_series(&metrics);
    assert!(
        exported.contains("sidechat_join_seconds_bucket"),
        "{exported:?}"
    );
    // Sample lines (`name{labels} value`): the label values on offer, at 0 from the start.
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/sidechat.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let panel_queries: String = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| format!("{}\n", t["expr"].as_str().unwrap()))
        .collect();
    let read = |file: &str| {
        std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    for (file, text) in [
        ("deploy/grafana/sidechat.json", panel_queries),
        (
            "deploy/prometheus/alerts.yaml",
            read("deploy/prometheus/alerts.yaml"),
        ),
        (
            "k8s/components/monitoring/prometheusrule.yaml",
            read("k8s/components/monitoring/prometheusrule.yaml"),
        ),
    ] {
        let named = named_series(&text);
        assert!(named.len() > 5, "{file} names {named:?}");
        for (name, labels) in named {
            assert!(
                exported.contains(&name),
                "{file} reads {name}, which /metrics does not export"
            );
            for label in labels {
                assert!(
                    samples
                        .iter()
                        .any(|s| s.starts_with(&format!("{name}{{")) && s.contains(&label)),
                    "{file} reads {name}{{{label}}}, a series /metrics does not have"
                );
            }
        }
    }
}

/// What `SidechatReadsFallingBehind` watches: each receipts statement is timed, and
/// what waits for one is counted.
#[tokio::test]
async fn metrics_time_each_receipts_statement_and_count_reads_waiting() {
    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let sent = alice.send_msg("chat:alice:bob", "one").await;
    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let reply = bob
        .push("chat:alice:bob", "read", json!({"message_id": sent["id"]}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(
        app.metric("sidechat_receipts_batch_seconds_count").await,
        Some(1.0)
    );
    assert!(app.metric("sidechat_receipts_batch_seconds_sum").await > Some(0.0));
    assert_eq!(app.metric("sidechat_receipts_queue_depth").await, Some(0.0));
}

/// A read held back by Postgres shows in the queue depth while it waits, and leaves it
/// once stored: the gauge `SidechatReadsFallingBehind` watches is the thread's own.
#[tokio::test]
async fn a_read_that_waits_on_postgres_is_counted_in_the_queue_depth_until_stored() {
    use diesel::prelude::*;
    use std::sync::mpsc;

    let app = spawn_app().await;
    let mut alice = app.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    let sent = alice.send_msg("chat:alice:bob", "one").await;
    let id = sent["id"].as_i64().expect("an id");

    // Another connection locks the message's row: the receipt's UPDATE waits behind it.
    let (locked_tx, locked) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let url = app.db_url.clone();
    let holder = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).expect("connect");
        conn.transaction(|conn| {
            diesel::sql_query(format!(
                "SELECT id FROM messages WHERE id = {id} FOR UPDATE"
            ))
            .execute(conn)?;
            locked_tx.send(()).expect("the test waits");
            let _ = released.recv();
            // Rolled back: the lock goes and the row is as it was.
            Err::<(), _>(diesel::result::Error::RollbackTransaction)
        })
        .unwrap_err();
    });
    tokio::task::spawn_blocking(move || locked.recv().expect("the row is locked"))
        .await
        .unwrap();

    let mut bob = app.connect("bob").await;
    bob.join_ok("chat:alice:bob", json!({})).await;
    let read = bob.push("chat:alice:bob", "read", json!({"message_id": id}));
    let watch = async {
        eventually("the held read is counted", || async {
            app.metric("sidechat_receipts_queue_depth").await == Some(1.0)
        })
        .await;
        release.send(()).expect("the holder waits");
    };
    let (reply, ()) = tokio::join!(read, watch);
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["response"]["marked"], 1, "{reply}");
    assert_eq!(app.metric("sidechat_receipts_queue_depth").await, Some(0.0));
    holder.join().unwrap();
}

#[tokio::test]
async fn a_socket_that_vanishes_without_a_close_frame_is_counted_apart_from_malformed_ones() {
    let app = spawn_app().await;
    for _ in 0..2 {
        let mut client = app.connect("alice").await;
        client.join_ok("chat:alice:bob", json!({})).await;
        // The TCP connection goes, with no WebSocket close frame (a tab killed, a
        // network lost).
        drop(client.into_socket().into_inner());
    }
    eventually("both vanished sockets are counted", || async {
        app.metric(r#"sidechat_disconnects_total{code="1006"}"#)
            .await
            == Some(2.0)
    })
    .await;
    assert_eq!(
        app.metric(r#"sidechat_disconnects_total{code="1007"}"#)
            .await,
        Some(0.0),
        "1007 means malformed input only"
    );
    eventually("their connections are gone", || async {
        app.metric("sidechat_connections").await == Some(0.0)
    })
    .await;
}
