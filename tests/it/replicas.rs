//! Several replicas against one Postgres and one Redis, as on Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn users_on_different_replicas_chat_as_if_they_shared_one() {
    let replicas = spawn_replicas(2, |_| {}).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    alice.join_ok("chat:alice:bob", json!({})).await;
    bob.join_ok("chat:bob:alice", json!({})).await;

    // Presence is shared: bob's state on B already holds alice from A.
    let state = bob.expect_event("chat:bob:alice", "presence_state").await;
    assert!(
        state.get("alice").is_some() && state.get("bob").is_some(),
        "{state}"
    );
    alice
        .expect(|f| f[3] == "presence_diff" && f[4]["joins"].get("bob").is_some())
        .await;

    let sent = alice.send_msg("chat:alice:bob", "across replicas").await;
    assert_eq!(bob.expect_event("chat:bob:alice", "new_msg").await, sent);
    bob.push("chat:bob:alice", "typing", json!({"typing": true}))
        .await;
    assert_eq!(
        alice.expect_event("chat:alice:bob", "typing").await,
        json!({"user_id": "bob", "typing": true})
    );
    bob.push("chat:bob:alice", "read", json!({"message_id": sent["id"]}))
        .await;
    assert_eq!(
        alice.expect_event("chat:alice:bob", "read").await,
        json!({"user_id": "bob", "message_id": sent["id"]})
    );

    // An edit through the API of replica B reaches alice on A.
    let (status, _) = b
        .api(
            "PATCH",
            &format!("/api/v1/messages/{}", sent["id"]),
            Some(json!({"body": "edited"})),
        )
        .await;
    assert_eq!(status, 200);
    let updated = alice.expect_event("chat:alice:bob", "msg_updated").await;
    assert_eq!(updated["body"], "edited");
}

#[tokio::test]
async fn a_lobby_notification_goes_out_only_when_the_recipient_is_joined_nowhere() {
    let replicas = spawn_replicas(2, |_| {}).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut bob_lobby = a.connect("bob").await;
    bob_lobby.join_ok("user:bob", json!({})).await;
    let mut alice = b.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;

    // Bob is in no chat anywhere: his lobby on A hears of alice's message on B.
    let first = alice.send_msg("chat:alice:bob", "one").await;
    let n = bob_lobby.expect_notification("user:bob", &first).await;
    assert_eq!(n["count"], 1);

    // Bob joins the chat on replica B with another socket: no notification now.
    let mut bob_chat = b.connect("bob").await;
    bob_chat.join_ok("chat:bob:alice", json!({})).await;
    let second = alice.send_msg("chat:alice:bob", "two").await;
    bob_chat
        .expect(|f| f[3] == "new_msg" && f[4]["id"] == second["id"])
        .await;
    // Leaving again makes the next message notify; by the time that one arrives, a
    // notification for "two" would have come long before it.
    bob_chat.leave("chat:bob:alice").await;
    alice
        .expect(|f| f[3] == "presence_diff" && f[4]["leaves"].get("bob").is_some())
        .await;
    let third = alice.send_msg("chat:alice:bob", "three").await;
    bob_lobby.expect_notification("user:bob", &third).await;
    assert!(
        !bob_lobby
            .has_buffered(|f| f[3] == "notification" && f[4]["message"]["id"] == second["id"]),
        "notified of a message bob saw in the chat on another replica"
    );
}

#[tokio::test]
async fn a_removed_member_is_dropped_on_every_replica() {
    let replicas = spawn_replicas(3, |_| {}).await;
    let (status, _) = replicas[0]
        .api(
            "PUT",
            "/api/v1/rooms/ops",
            Some(json!({"members": ["alice", "bob"]})),
        )
        .await;
    assert_eq!(status, 201);
    let mut bob_on_b = replicas[1].connect("bob").await;
    let mut bob_on_c = replicas[2].connect("bob").await;
    bob_on_b.join_ok("room:ops", json!({})).await;
    bob_on_c.join_ok("room:ops", json!({})).await;
    let (status, _) = replicas[0]
        .api("DELETE", "/api/v1/rooms/ops/members/bob", None)
        .await;
    assert_eq!(status, 204);
    for bob in [&mut bob_on_b, &mut bob_on_c] {
        bob.expect(|f| f[2] == "room:ops" && f[3] == "phx_close")
            .await;
    }
}

#[tokio::test]
async fn a_crashed_replicas_users_go_offline_by_themselves() {
    let replicas = spawn_replicas(1, |s| s.broker.presence_ttl_s = 3).await;
    let a = &replicas[0];
    let mut alice = a.connect("alice").await;
    alice.join_ok("chat:alice:carol", json!({})).await;

    // Replica C is a real process, so it can die without a word: SIGKILL.
    let prefix = a.redis_prefix.clone().unwrap();
    let mut replica_c = std::process::Command::new(env!("CARGO_BIN_EXE_sidechat"))
        .arg("serve")
        .env("DATABASE_URL", &a.db_url)
        .env("SIDECHAT__SERVER__HOST", "127.0.0.1")
        .env("SIDECHAT__SERVER__PORT", "0")
        .env(
            "SIDECHAT__AUTH__HMAC_SECRETS",
            test_settings().auth.hmac_secrets[0].expose(),
        )
        .env("SIDECHAT__BROKER__KIND", "redis")
        .env("SIDECHAT__BROKER__REDIS_URL", redis_url())
        .env("SIDECHAT__BROKER__REDIS_PREFIX", &prefix)
        .env("SIDECHAT__BROKER__PRESENCE_TTL_S", "3")
        .env("RUST_LOG", "sidechat=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its log names the port once it listens; the rest of the log is drained so the
    // process never blocks on a full pipe.
    let log = replica_c.stderr.take().unwrap();
    let port = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(log).lines().map_while(Result::ok);
        let port = lines.find_map(|line| {
            line.split("listening on port ")
                .nth(1)
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        std::thread::spawn(move || lines.for_each(drop));
        port
    })
    .await
    .unwrap()
    .expect("replica C logs its port");
    let url = format!(
        "ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0&token={}",
        hmac_token("carol", 600)
    );
    let (carol_ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut carol = Client::from_socket(carol_ws);
    carol.join_ok("chat:carol:alice", json!({})).await;
    alice
        .expect(|f| f[3] == "presence_diff" && f[4]["joins"].get("carol").is_some())
        .await;

    replica_c.kill().unwrap();
    replica_c.wait().unwrap();
    // Within a few TTLs replica A sweeps carol's expired entry and announces it.
    let left = alice
        .expect(|f| f[3] == "presence_diff" && f[4]["leaves"].get("carol").is_some())
        .await;
    assert!(left[4]["leaves"]["carol"]["metas"][0]["phx_ref"].is_string());
}

#[tokio::test]
async fn sigterm_of_one_replica_under_load_loses_no_acknowledged_message() {
    let mut replicas = spawn_replicas(2, |s| s.limits.messages_per_second = 0).await;
    let b = replicas.pop().unwrap();
    let mut a = replicas.pop().unwrap();
    let mut alice = a.connect("alice").await;
    alice.join_ok("chat:alice:bob", json!({})).await;

    // Pipeline 300 sends and pull the plug on A in the middle of them, once the first
    // acknowledgements are coming back.
    let total = 300;
    for i in 0..total {
        let frame = json!(["1", format!("m{i}"), "chat:alice:bob", "new_msg",
                           {"body": format!("message {i}"), "client_ref": format!("ref-{i}")}]);
        alice.send_text(frame.to_string()).await;
        if i == total / 2 {
            let first_ack = alice.expect(|f| f[1] == "m0" && f[3] == "phx_reply").await;
            alice.push_back(first_ack);
            a.shutdown.cancel();
        }
    }
    let mut acked: BTreeMap<String, Value> = BTreeMap::new();
    let closed = alice.expect_close().await;
    assert_eq!(closed, Closed::Code(1001));
    for frame in alice.take_buffered() {
        if frame[3] == "phx_reply" && frame[4]["status"] == "ok" {
            let message = frame[4]["response"]["message"].clone();
            acked.insert(message["client_ref"].as_str().unwrap().to_owned(), message);
        }
    }
    a.stopped().await.unwrap();

    // The client reconnects to B and resends everything it has no ack for.
    let mut again = b.connect("alice").await;
    again.join_ok("chat:alice:bob", json!({})).await;
    for i in 0..total {
        let client_ref = format!("ref-{i}");
        if acked.contains_key(&client_ref) {
            continue;
        }
        let reply = again
            .push(
                "chat:alice:bob",
                "new_msg",
                json!({"body": format!("message {i}"), "client_ref": client_ref}),
            )
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }

    // Every acknowledged message is stored as acknowledged, and each ref exactly once.
    let rows: Vec<(i64, Option<String>)> = b
        .db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::messages::dsl::*;
            messages.select((id, client_ref)).load(conn).unwrap()
        })
        .await;
    assert_eq!(rows.len(), total, "one row per message, no duplicate");
    let stored: BTreeSet<String> = rows.iter().filter_map(|(_, r)| r.clone()).collect();
    assert_eq!(stored.len(), total);
    for (client_ref, message) in &acked {
        assert!(
            rows.iter()
                .any(|(id, r)| r.as_deref() == Some(client_ref) && json!(id) == message["id"]),
            "acknowledged {client_ref} is missing or changed"
        );
    }
    assert!(
        !acked.is_empty(),
        "some messages were acknowledged before the drain"
    );
}
