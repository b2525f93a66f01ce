//! Conversation-list moves deferred on a busy replica (`database.list_window_ms`): the
//! list catches up within the window, stays right across a deletion, is flushed on a
//! graceful stop, and what a dead replica left undone is made good by the replicas.

use diesel::prelude::*;
use serde_json::Value;

use crate::helpers::*;

/// Always deferred (as on a busy replica), over `window_ms`.
fn deferring(window_ms: u64) -> impl Fn(&mut sidechat::settings::Settings) {
    move |s| {
        s.database.list_window_ms = window_ms;
        s.database.list_defer_rate = 0;
    }
}

async fn list(app: &TestApp, user: &str) -> Value {
    let (status, page) = app
        .api("GET", &format!("/api/v1/users/{user}/conversations"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    page
}

fn last_ids(page: &Value) -> Vec<(String, Value)> {
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["topic"].as_str().unwrap().to_owned(),
                c["last_message"]["id"].clone(),
            )
        })
        .collect()
}

/// Waits for the replica's first check of the newest messages' moves.
async fn healed(app: &TestApp) {
    eventually("the newest moves are checked", || async {
        app.metric("sidechat_list_heals_total").await >= Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn deferred_moves_reach_the_list_within_the_window_and_respect_a_deletion() {
    let app = spawn_app_with(deferring(100)).await;
    let first = app.post_message("chat:ann:bo", "bo", "one").await;
    let second = app.post_message("chat:ann:cy", "cy", "two").await;
    eventually("both chats are listed", || async {
        last_ids(&list(&app, "ann").await)
            == [
                ("chat:ann:cy".to_owned(), second["id"].clone()),
                ("chat:ann:bo".to_owned(), first["id"].clone()),
            ]
    })
    .await;

    // A message deleted while its move is still pending: the move is made before the
    // deletion, which then puts the chat back to the message before.
    let spam = app.post_message("chat:ann:bo", "bo", "spam").await;
    let (status, _) = app
        .api("DELETE", &format!("/api/v1/messages/{}", spam["id"]), None)
        .await;
    assert_eq!(status, 204);
    let marker = app.post_message("chat:ann:dee", "dee", "later").await;
    eventually("the later message is listed", || async {
        last_ids(&list(&app, "ann").await).first()
            == Some(&("chat:ann:dee".to_owned(), marker["id"].clone()))
    })
    .await;
    let page = list(&app, "ann").await;
    let bo = page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["topic"] == "chat:ann:bo")
        .unwrap();
    assert_eq!(bo["last_message"]["id"], first["id"], "{bo}");
    assert_eq!(bo["updated_at"], first["sent_at"]);
}

#[tokio::test]
async fn a_graceful_stop_makes_the_pending_moves() {
    // A window far longer than the test: only the stop can make the move.
    let mut first = spawn_app_with(deferring(600_000)).await;
    let message = first
        .post_message("chat:ann:bo", "bo", "before the deploy")
        .await;
    first.shutdown.cancel();
    first.stopped().await.unwrap();
    // The next replica neither defers nor heals: what it lists, the stop moved.
    let second = spawn_app_on(first.db_url.clone(), |s| s.database.list_window_ms = 0).await;
    assert_eq!(
        last_ids(&list(&second, "bo").await),
        [("chat:ann:bo".to_owned(), message["id"].clone())]
    );
}

#[tokio::test]
async fn moves_a_dead_replica_left_undone_are_made_at_the_next_start() {
    let mut first = spawn_app().await;
    let kept = first.post_message("chat:ann:bo", "bo", "listed").await;
    first.shutdown.cancel();
    first.stopped().await.unwrap();
    // As if a replica had stored these and died before moving the lists.
    first
        .db(|conn| {
            diesel::sql_query(
                "INSERT INTO messages (topic, sender_id, recipient_id, body) VALUES \
                 ('chat:ann:bo', 'bo', 'ann', 'unmoved'), \
                 ('chat:ann:eve', 'eve', 'ann', 'a new chat, unlisted')",
            )
            .execute(conn)
            .unwrap();
        })
        .await;
    let second = spawn_app_on(first.db_url.clone(), |_| {}).await;
    healed(&second).await;
    let page = list(&second, "ann").await;
    let topics: Vec<String> = last_ids(&page).into_iter().map(|(t, _)| t).collect();
    assert_eq!(topics, ["chat:ann:eve", "chat:ann:bo"], "{page}");
    assert_ne!(
        page["conversations"][1]["last_message"]["id"], kept["id"],
        "bo's chat moved to the unmoved message"
    );
    assert_eq!(
        list(&second, "eve").await["conversations"][0]["peer"],
        "ann"
    );
    assert_eq!(second.message_count().await, 3);
}

#[tokio::test]
async fn replayed_moves_do_not_bring_an_erased_user_back() {
    let mut first = spawn_app_with(deferring(50)).await;
    first.post_message("chat:ann:bo", "bo", "hello ann").await;
    first.post_message("chat:ann:bo", "ann", "hi bo").await;
    eventually("ann's chat is listed", || async {
        !last_ids(&list(&first, "ann").await).is_empty()
    })
    .await;
    assert_eq!(first.api("DELETE", "/api/v1/users/ann", None).await.0, 200);
    first.shutdown.cancel();
    first.stopped().await.unwrap();

    // The next start replays the newest messages' moves, bo's to ann among them.
    let second = spawn_app_on(first.db_url.clone(), deferring(50)).await;
    healed(&second).await;
    assert!(
        last_ids(&list(&second, "ann").await).is_empty(),
        "ann's past put her back on a list"
    );
    assert_eq!(last_ids(&list(&second, "bo").await).len(), 1);
    // A new message to her does.
    let again = second
        .post_message("chat:ann:bo", "bo", "still there?")
        .await;
    eventually("ann is listed again", || async {
        last_ids(&list(&second, "ann").await) == [("chat:ann:bo".to_owned(), again["id"].clone())]
    })
    .await;
}
