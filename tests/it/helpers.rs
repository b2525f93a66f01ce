//! The test harness: one private Postgres per test run, one database per test, the
//! real service on a free port, and clients that speak the protocol.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sidechat::Application;
use sidechat::auth::{JwtClaims, mint_hmac, mint_jwt};
use sidechat::chat::UserId;
use sidechat::dev::{ClusterOptions, PgCluster};
use sidechat::settings::{Secret, Settings, Sources};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const TEST_TOML: &str = include_str!("../../config/test.toml");
/// The first of the test configuration's `api.keys`.
pub const API_KEY: &str = "test-api-key-0123456789abcdef";
/// How long any expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

struct Cluster {
    /// A URL whose database part is replaced per test.
    server_url: String,
    /// Kept alive for the whole run; its watchdog stops it when the process ends.
    _pg: Option<PgCluster>,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Cluster {
                server_url: url,
                _pg: None,
            };
        }
        let data_dir = std::env::temp_dir().join(format!(
            "sidechat-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let pg = PgCluster::start(ClusterOptions {
            data_dir,
            fast_unsafe: true,
            remove_on_stop: true,
            settings: Vec::new(),
        })
        .expect("start the private test Postgres");
        Cluster {
            server_url: pg.url("postgres"),
            _pg: Some(pg),
        }
    })
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A fresh, empty database on the run's cluster.
pub fn fresh_database() -> String {
    use diesel::prelude::*;
    let cluster = cluster();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::establish(&cluster.server_url).expect("connect to Postgres");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .expect("create a test database");
    with_database(&cluster.server_url, &name)
}

/// A private Redis for the run (Debian's redis-server), stopped when the tests end.
// The watchdog is meant to outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
pub fn redis_url() -> &'static str {
    static REDIS: OnceLock<String> = OnceLock::new();
    REDIS.get_or_init(|| {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return url;
        }
        let port = free_port();
        // The watchdog shell ends redis-server when this test process ends.
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no \
             --daemonize no --loglevel warning & child=$!; \
             while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $child",
            parent = std::process::id()
        );
        std::process::Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        let url = format!("redis://127.0.0.1:{port}/");
        // Ready when it answers; redis-server starts in milliseconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::yield_now();
        }
        url
    })
}

/// The port a child process announces on `output` right after `marker` (e.g.
/// "listening on port "), within `wait`. Keeps reading afterwards, so the child never
/// blocks on a full pipe.
pub fn announced_port(
    output: impl std::io::Read + Send + 'static,
    marker: &'static str,
    wait: Duration,
) -> u16 {
    use std::io::BufRead;
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            let port = line.split(marker).nth(1).and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u16>().ok()
            });
            if let Some(port) = port {
                let _ = port_tx.send(port);
            }
        }
    });
    port_rx
        .recv_timeout(wait)
        .expect("the process announces its port")
}

/// A port free now, for a setting that needs a fixed one (the OS picks `port = 0`'s).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An HTTP client for the tests. reqwest's TLS stack wants its crypto chosen before a
/// client is built, even one that only speaks plain HTTP.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http_client().get(url).send().await
}

/// Waits until `holds` is true, checking it every 50 ms: for state that changes with
/// no event to wait for (rows, gauges). Fails the test after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !holds().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn test_settings() -> Settings {
    Settings::load(&Sources {
        overlays: vec![TEST_TOML],
        file: None,
        environment: false,
    })
    .expect("test settings load")
}

pub struct TestApp {
    pub port: u16,
    /// With `server.internal_port` set: where the host API and /metrics answer.
    pub internal_port: Option<u16>,
    pub db_url: String,
    /// The Redis key prefix its replicas share, when the broker is Redis.
    pub redis_prefix: Option<String>,
    pub shutdown: CancellationToken,
    stopped: Option<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service on its own thread and actix system, against a fresh database.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let db_url = fresh_database();
    let mut settings = test_settings();
    settings.database.url = Secret::new(db_url.clone());
    customize(&mut settings);
    spawn_with_settings(settings, db_url).await
}

/// Starts the service against an existing database (a restart: what the last run left
/// there is still there).
pub async fn spawn_app_on(db_url: String, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    settings.database.url = Secret::new(db_url.clone());
    customize(&mut settings);
    spawn_with_settings(settings, db_url).await
}

/// Several replicas of one deployment: one database, one Redis, a key prefix of their own.
pub async fn spawn_replicas(count: usize, customize: impl Fn(&mut Settings)) -> Vec<TestApp> {
    let db_url = fresh_database();
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut replicas = Vec::new();
    for _ in 0..count {
        let mut settings = test_settings();
        settings.database.url = Secret::new(db_url.clone());
        settings.broker.kind = "redis".into();
        settings.broker.redis_url = Secret::new(redis_url());
        settings.broker.redis_prefix = prefix.clone();
        customize(&mut settings);
        let mut replica = spawn_with_settings(settings, db_url.clone()).await;
        replica.redis_prefix = Some(prefix.clone());
        replicas.push(replica);
    }
    replicas
}

async fn spawn_with_settings(settings: Settings, db_url: String) -> TestApp {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = match Application::build(settings) {
                Ok(app) => app,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok((app.port(), app.internal_port(), app.shutdown_token())));
            let result = app.run_until_stopped().await;
            let _ = stopped_tx.send(result);
        });
    });
    let (port, internal_port, shutdown) = ready_rx
        .await
        .expect("app thread answered")
        .expect("app builds");
    TestApp {
        port,
        internal_port,
        db_url,
        redis_prefix: None,
        shutdown,
        stopped: Some(stopped_rx),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn hmac_token(user: &str, ttl_s: i64) -> String {
    let settings = test_settings();
    let secret = settings.auth.hmac_secrets.first().expect("test secret");
    mint_hmac(
        secret,
        &UserId::parse(user).expect("valid user id"),
        chrono::Utc::now().timestamp() + ttl_s,
    )
}

pub fn jwt_token(user: &str, role: Option<&str>, ttl_s: i64) -> String {
    named_jwt_token(user, None, role, ttl_s)
}

/// A JWT that carries a display `name`.
pub fn named_jwt_token(user: &str, name: Option<&str>, role: Option<&str>, ttl_s: i64) -> String {
    let settings = test_settings();
    mint_jwt(
        &settings.auth.jwt_secret,
        "HS256",
        &JwtClaims {
            sub: user.into(),
            exp: chrono::Utc::now().timestamp() + ttl_s,
            name: name.map(String::from),
            role: role.map(String::from),
        },
    )
    .expect("mint a test JWT")
}

impl TestApp {
    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on the port the host API and /metrics answer on: the internal one when set.
    pub fn internal_http(&self, path: &str) -> String {
        let port = self.internal_port.unwrap_or(self.port);
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn socket_url(&self, token: &str) -> String {
        format!(
            "ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0&token={token}",
            self.port
        )
    }

    /// Connects as `user` with an HMAC token.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_with_token(&hmac_token(user, 3600)).await
    }

    /// Connects as a staff member (a JWT: HMAC tokens carry no role).
    pub async fn connect_staff(&self, user: &str) -> Client {
        self.connect_with_token(&jwt_token(user, Some("staff"), 3600))
            .await
    }

    pub async fn connect_with_token(&self, token: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.socket_url(token))
            .await
            .expect("socket upgrade");
        Client::from_socket(ws)
    }

    /// Calls the host API with the test key; returns the status and the JSON body
    /// (null when there is none).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_with_key(method, path, body, Some(API_KEY)).await
    }

    pub async fn api_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http_client().request(method, self.internal_http(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The HTTP status and JSON body of a refused upgrade.
    pub async fn refused_upgrade(&self, url: &str) -> (u16, Value) {
        use tokio_tungstenite::tungstenite::Error;
        match tokio_tungstenite::connect_async(url).await {
            Err(Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                (status, body)
            }
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
            Ok(_) => panic!("expected the upgrade to be refused"),
        }
    }

    /// Runs `read` on a fresh connection to this test's database.
    pub async fn db<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut diesel::PgConnection) -> T + Send + 'static,
    ) -> T {
        let url = self.db_url.clone();
        tokio::task::spawn_blocking(move || {
            use diesel::Connection;
            let mut conn = diesel::PgConnection::establish(&url).expect("connect");
            read(&mut conn)
        })
        .await
        .expect("query task")
    }

    /// `user`'s conversation list through their own token (`query`: `?limit=...`, or
    /// empty): status and body.
    pub async fn my_list(&self, user: &str, query: &str) -> (u16, Value) {
        let path = format!("/v1/me/conversations{query}");
        self.api_with_key("GET", &path, None, Some(&hmac_token(user, 3600)))
            .await
    }

    /// Posts `body` from `from` in `topic` through the host API; returns the Message.
    pub async fn post_message(&self, topic: &str, from: &str, body: &str) -> Value {
        let (status, message) = self
            .api(
                "POST",
                "/api/v1/messages",
                Some(json!({"topic": topic, "user_id": from, "body": body})),
            )
            .await;
        assert_eq!(status, 201, "{message}");
        message
    }

    /// The value of one series in `/metrics` (`name{labels}` as printed), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = http_get(self.internal_http("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.trim().parse().unwrap())
    }

    /// Rows in the outbox and deliveries: what is left to tell offline users.
    pub async fn outbox_rows(&self) -> (i64, i64) {
        self.db(|conn| {
            use diesel::prelude::*;
            use sidechat::store::schema::{deliveries, outbox};
            let waiting: i64 = outbox::table.count().get_result(conn).unwrap();
            let pending: i64 = deliveries::table.count().get_result(conn).unwrap();
            (waiting, pending)
        })
        .await
    }

    /// Waits until nothing is left to tell offline users (the worker finished what it
    /// took).
    pub async fn outbox_drained(&self) {
        eventually("the outbox drains", || async {
            self.outbox_rows().await == (0, 0)
        })
        .await;
    }

    /// How many rows `messages` holds.
    pub async fn message_count(&self) -> i64 {
        self.db(|conn| {
            use diesel::prelude::*;
            sidechat::store::schema::messages::table
                .count()
                .get_result(conn)
                .expect("count")
        })
        .await
    }

    /// Waits until the service has fully stopped after its shutdown token fired.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        let rx = self.stopped.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("service stops in time")
            .expect("service thread answered")
    }
}

/// A Phoenix V2 client over a real WebSocket.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    /// Frames read but not yet asked for.
    inbox: Vec<Value>,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16),
    NoCode,
}

impl Client {
    pub fn from_socket(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            next_ref: 1,
            inbox: Vec::new(),
        }
    }

    /// The bare socket, for tests that read and write at once (frames still buffered
    /// here are dropped).
    pub fn into_socket(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    /// Puts a frame back, to be found by a later `expect`.
    pub fn push_back(&mut self, frame: Value) {
        self.inbox.push(frame);
    }

    /// Every frame read but not yet asked for.
    pub fn take_buffered(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.inbox)
    }

    fn take_ref(&mut self) -> String {
        let r = self.next_ref.to_string();
        self.next_ref += 1;
        r
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(WsMessage::Text(text.into().into()))
            .await
            .expect("send frame");
    }

    /// Sends any WebSocket message, raw frames included.
    pub async fn send_message(&mut self, message: WsMessage) {
        self.ws.send(message).await.expect("send frame");
    }

    /// Reads the next frame, failing the test after `WAIT`.
    async fn read_frame(&mut self) -> Result<Value, Closed> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait");
            match next {
                Some(Ok(WsMessage::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("server frames are JSON"));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(frame.map_or(Closed::NoCode, |f| Closed::Code(u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Closed::NoCode),
            }
        }
    }

    /// The next frame, buffered or new, if one comes within `within` (at most `WAIT`);
    /// `Some(Err(_))` once the socket is closed.
    pub async fn next_frame(&mut self, within: Duration) -> Option<Result<Value, Closed>> {
        if !self.inbox.is_empty() {
            return Some(Ok(self.inbox.remove(0)));
        }
        tokio::time::timeout(within.min(WAIT), self.read_frame())
            .await
            .ok()
    }

    /// The first frame, buffered or new, that `matches`; others stay buffered.
    pub async fn expect(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.inbox.iter().position(&matches) {
            return self.inbox.remove(i);
        }
        loop {
            match self.read_frame().await {
                Ok(frame) if matches(&frame) => return frame,
                Ok(frame) => self.inbox.push(frame),
                Err(closed) => panic!(
                    "socket closed ({closed:?}) while waiting; buffered: {:?}",
                    self.inbox
                ),
            }
        }
    }

    /// Pushes `event` and returns the reply's payload `{"status", "response"}`.
    pub async fn push_with_join_ref(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> Value {
        let msg_ref = self.take_ref();
        let frame = json!([join_ref, msg_ref, topic, event, payload]);
        self.send_text(frame.to_string()).await;
        let reply = self
            .expect(|f| f[1] == json!(msg_ref) && f[3] == "phx_reply")
            .await;
        reply[4].clone()
    }

    pub async fn push(&mut self, topic: &str, event: &str, payload: Value) -> Value {
        self.push_with_join_ref(Some("1"), topic, event, payload)
            .await
    }

    /// The bodies of `topic`'s history page, oldest first.
    pub async fn history_bodies(&mut self, topic: &str) -> Vec<String> {
        let history = self.push(topic, "history", json!({})).await;
        (history["response"]["messages"].as_array())
            .expect("a history page")
            .iter()
            .map(|m| m["body"].as_str().expect("a body").to_owned())
            .collect()
    }

    /// Joins and returns the reply payload.
    pub async fn join(&mut self, topic: &str, payload: Value) -> Value {
        let join_ref = self.take_ref();
        self.push_with_join_ref(Some(&join_ref), topic, "phx_join", payload)
            .await
    }

    /// Leaves `topic`, asserting success.
    pub async fn leave(&mut self, topic: &str) {
        let reply = self.push(topic, "phx_leave", json!({})).await;
        assert_eq!(reply["status"], "ok");
    }

    /// Joins, asserting success; returns the response.
    pub async fn join_ok(&mut self, topic: &str, payload: Value) -> Value {
        let reply = self.join(topic, payload).await;
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        reply["response"].clone()
    }

    /// Sends a message and returns the stored Message from the reply.
    pub async fn send_msg(&mut self, topic: &str, body: &str) -> Value {
        let reply = self.push(topic, "new_msg", json!({"body": body})).await;
        assert_eq!(reply["status"], "ok", "new_msg: {reply}");
        reply["response"]["message"].clone()
    }

    /// The payload of the next `event` on `topic`.
    pub async fn expect_event(&mut self, topic: &str, event: &str) -> Value {
        let frame = self.expect(|f| f[2] == topic && f[3] == event).await;
        frame[4].clone()
    }

    /// The `notification` on `lobby` about message `message_id` (notifications are sent
    /// off the sender's path, so two may arrive in either order).
    pub async fn expect_notification(&mut self, lobby: &str, message: &Value) -> Value {
        let frame = self
            .expect(|f| {
                f[2] == lobby && f[3] == "notification" && f[4]["message"]["id"] == message["id"]
            })
            .await;
        frame[4].clone()
    }

    /// A heartbeat round trip: every event the server queued for this socket before
    /// the heartbeat is in the buffer afterwards.
    pub async fn sync(&mut self) {
        let reply = self
            .push_with_join_ref(None, "phoenix", "heartbeat", json!({}))
            .await;
        assert_eq!(reply["status"], "ok");
    }

    /// Whether a frame matching `matches` has arrived (call after `sync`).
    pub fn has_buffered(&self, matches: impl Fn(&Value) -> bool) -> bool {
        self.inbox.iter().any(matches)
    }

    /// Reads until the server closes the socket; returns the close code.
    pub async fn expect_close(&mut self) -> Closed {
        loop {
            match self.read_frame().await {
                Ok(frame) => self.inbox.push(frame),
                Err(closed) => return closed,
            }
        }
    }
}
