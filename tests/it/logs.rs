//! `log.format = "json"`: every line the binary writes is one JSON object with its
//! fields, and none carries a token.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::startup::{alice_token, serve};

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_their_fields_and_no_token() {
    let mut child = serve(&fresh_database())
        .env("SIDECHAT__LOG__FORMAT", "json")
        .env("RUST_LOG", "info,sidechat=debug")
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // A failed assertion must not leave the server running.
    let child = KillOnDrop(child);
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let port = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the service logs its port");
        let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        seen.push(line);
        let banner = parsed["msg"].as_str().unwrap_or("");
        if let Some(port) = banner.strip_prefix("listening on port ") {
            break port.parse::<u16>().expect("a port");
        }
    };

    // Connect (the token in the query string), join, send, disconnect.
    let token = alice_token();
    let url = format!("ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0&token={token}");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut alice = Client::from_socket(ws);
    alice.join_ok("chat:alice:bob", json!({})).await;
    alice.send_msg("chat:alice:bob", "hello").await;
    drop(alice);
    let find = |seen: &mut Vec<String>, what: &dyn Fn(&Value) -> bool| loop {
        if seen
            .iter()
            .any(|l| serde_json::from_str(l).is_ok_and(|v: Value| what(&v)))
        {
            return;
        }
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the line expected is not among {seen:#?}"),
        }
    };
    // The socket's lines carry their connection and user as fields.
    find(&mut seen, &|v| {
        v["msg"] == "connected" && v["user"] == "alice"
    });
    find(&mut seen, &|v| {
        v["msg"] == "joined" && v["topic"] == "chat:alice:bob" && v["conn"].is_u64()
    });
    find(&mut seen, &|v| {
        v["user"] == "alice"
            && v["conn"].is_u64()
            && matches!(
                v["msg"].as_str(),
                Some("disconnected" | "lost (no close frame)")
            )
    });

    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    // Every line to the end: the drain and the stop are logged too.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        seen.push(line);
    }
    assert!(seen.len() > 5, "{seen:#?}");
    for line in &seen {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        for field in ["ts", "level", "target", "msg"] {
            assert!(parsed[field].is_string(), "{field} in {line}");
        }
        assert!(!line.contains(&token), "a token reached the log: {line}");
        assert!(
            !line.contains("token="),
            "a query string reached the log: {line}"
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("\"msg\":\"stopped\"")),
        "{seen:#?}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
