//! The binary itself: start-up failures are one clear line, the commands work, and
//! SIGTERM stops a serving process cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

pub(crate) const SECRET: &str = "startup-test-secret-0123456789abcdef";

pub(crate) fn sidechat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidechat"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .env("SIDECHAT__SERVER__HOST", "127.0.0.1")
        .env("SIDECHAT__SERVER__PORT", "0");
    cmd
}

/// `sidechat serve` on `url` with the test secret, its log piped (spawn it).
pub(crate) fn serve(url: &str) -> Command {
    let mut cmd = sidechat();
    cmd.args(["serve"])
        .env("DATABASE_URL", url)
        .env("SIDECHAT__AUTH__HMAC_SECRETS", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A minute's token for `alice`, signed with `SECRET` as `serve` is told to verify.
pub(crate) fn alice_token() -> String {
    sidechat::auth::mint_hmac(
        &sidechat::settings::Secret::new(SECRET),
        &sidechat::chat::UserId::parse("alice").unwrap(),
        chrono::Utc::now().timestamp() + 60,
    )
}

/// Runs to completion; returns (success, stderr lines).
pub(crate) fn run(cmd: &mut Command) -> (bool, Vec<String>, String) {
    let output = cmd.stdin(Stdio::null()).output().expect("run sidechat");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(String::from)
        .collect();
    (
        output.status.success(),
        stderr,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

pub(crate) fn write_temp(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn start_up_problems_are_one_line_naming_the_key() {
    let unknown_key = write_temp("unknown.toml", "[server]\nprot = 4000\n");
    // (environment, arguments, what the one line must say)
    type Case<'a> = (Vec<(&'a str, String)>, Vec<String>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("DATABASE_URL", "postgres://x@127.0.0.1:1/x".into())],
            vec!["serve".into()],
            "auth: no way to verify tokens",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/x".into()),
                ("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into()),
                ("SIDECHAT__DATABASE__CONNECT_TIMEOUT_S", "2".into()),
            ],
            vec!["serve".into()],
            "database.url: cannot connect to postgres://…@127.0.0.1:1/x",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x".into()),
                ("SIDECHAT__AUTH__JWT_ALGORITHM", "RS256".into()),
                (
                    "SIDECHAT__AUTH__JWT_PUBLIC_KEY_FILE",
                    "/nonexistent/key.pem".into(),
                ),
            ],
            vec!["serve".into()],
            "auth.jwt_public_key_file: cannot read /nonexistent/key.pem",
        ),
        (
            vec![("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into())],
            vec![
                "serve".into(),
                "--config".into(),
                unknown_key.display().to_string(),
            ],
            "prot",
        ),
        (
            vec![],
            vec![
                "serve".into(),
                "--config".into(),
                "/nonexistent.toml".into(),
            ],
            "--config /nonexistent.toml: no such file",
        ),
        (
            vec![("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into())],
            vec!["serve".into()],
            "database.url: not set",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x".into()),
                ("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into()),
                (
                    "SIDECHAT__PUSH__VAPID_PRIVATE_KEY_FILE",
                    "/nonexistent/vapid.pem".into(),
                ),
                ("SIDECHAT__PUSH__SUBJECT", "mailto:ops@example.com".into()),
            ],
            vec!["serve".into()],
            "push.vapid_private_key_file: cannot read /nonexistent/vapid.pem",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x".into()),
                ("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into()),
                (
                    "SIDECHAT__PUSH__VAPID_PRIVATE_KEY_FILE",
                    "/etc/hostname".into(),
                ),
                ("SIDECHAT__PUSH__SUBJECT", "mailto:ops@example.com".into()),
            ],
            vec!["serve".into()],
            "push.vapid_private_key_file: /etc/hostname holds no P-256 private key",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x".into()),
                ("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into()),
                (
                    "SIDECHAT__WEBHOOKS__URL",
                    "https://host.example/hooks".into(),
                ),
            ],
            vec!["serve".into()],
            "webhooks.secret: required when webhooks.url is set",
        ),
        (
            vec![
                ("DATABASE_URL", "postgres://x@127.0.0.1:1/x".into()),
                ("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into()),
                ("SIDECHAT__WEBHOOKS__URL", "host.example/hooks".into()),
                ("SIDECHAT__WEBHOOKS__SECRET", SECRET.into()),
            ],
            vec!["serve".into()],
            "webhooks.url: must be an absolute http:// or https:// URL",
        ),
        (
            vec![
                ("SIDECHAT__AUTH__HMAC_SECRETS", SECRET.into()),
                ("SIDECHAT__AUTH__LEEWAY_S", "9999".into()),
            ],
            vec!["serve".into()],
            "auth.leeway_s: must be <= 300",
        ),
    ];
    for (env, args, expected) in cases {
        let mut cmd = sidechat();
        cmd.args(&args).envs(env.iter().map(|(k, v)| (*k, v)));
        let (ok, stderr, _) = run(&mut cmd);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(stderr.len(), 1, "{args:?}: one line, got {stderr:?}");
        assert!(stderr[0].starts_with("sidechat: error: "), "{stderr:?}");
        assert!(
            stderr[0].contains(expected),
            "{expected:?} not in {stderr:?}"
        );
        assert!(
            !stderr[0].contains("hunter2"),
            "a password leaked: {stderr:?}"
        );
    }
}

#[test]
fn settings_layer_defaults_then_file_then_environment() {
    let file = write_temp(
        "layers.toml",
        "[server]\nport = 4100\nidle_timeout_s = 45\n[chat]\nhistory_limit = 20\n[auth]\nhmac_secrets = [\"from-the-file-0123456789abcdef012\"]\n",
    );
    let (ok, stderr, stdout) = run(sidechat()
        .args(["check-config", "--show"])
        .arg(&file)
        .env_remove("SIDECHAT__SERVER__PORT")
        .env("SIDECHAT__CHAT__HISTORY_LIMIT", "30")
        .env(
            "SIDECHAT__SERVER__ALLOWED_ORIGINS",
            "https://a.example,https://b.example",
        ));
    assert!(ok, "{stderr:?}");
    let has = |needle: &str| stdout.contains(needle);
    assert!(
        has("port: 4100"),
        "the file overrides the default: {stdout}"
    );
    assert!(has("idle_timeout_s: 45"));
    assert!(
        has("history_limit: 30"),
        "the environment overrides the file"
    );
    assert!(
        has("max_body_bytes: 4000"),
        "untouched keys keep their default"
    );
    assert!(
        has("\"https://a.example\",\n") && has("\"https://b.example\""),
        "{stdout}"
    );
    assert!(!has("from-the-file"), "secrets are redacted: {stdout}");
    assert!(stdout.trim_end().ends_with(": ok"));
}

#[test]
fn the_token_command_mints_tokens_the_service_accepts() {
    let (ok, _, stdout) = run(sidechat().args(["token", "alice", "--dev", "--ttl", "30m"]));
    assert!(ok);
    let settings = sidechat::settings::Settings::load(&sidechat::settings::Sources {
        overlays: vec![sidechat::settings::DEVELOPMENT_TOML],
        ..Default::default()
    })
    .unwrap();
    let verifier = sidechat::auth::Verifier::new(&settings.auth).unwrap();
    let now = chrono::Utc::now().timestamp();
    let identity = verifier.verify(stdout.trim(), now).unwrap();
    assert_eq!(identity.user_id.as_str(), "alice");
    assert!((identity.expires_at - now - 1800).abs() <= 35);

    let (ok, _, stdout) = run(sidechat().args(["token", "s1", "--dev", "--role", "staff"]));
    assert!(ok);
    let identity = verifier.verify(stdout.trim(), now).unwrap();
    assert_eq!(identity.role, sidechat::chat::Role::Staff);

    let (ok, stderr, _) = run(sidechat().args(["token", "bad:id", "--dev"]));
    assert!(!ok);
    assert!(stderr[0].contains("user id"), "{stderr:?}");

    // Past auth.max_token_ttl_s (7 days by default) the server would refuse it.
    let (ok, stderr, _) = run(sidechat().args(["token", "alice", "--dev", "--ttl", "30d"]));
    assert!(!ok);
    assert!(stderr[0].contains("auth.max_token_ttl_s"), "{stderr:?}");
}

#[test]
fn migrate_applies_the_schema_and_exits() {
    let url = fresh_database();
    let (ok, stderr, stdout) = run(sidechat()
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .env("SIDECHAT__AUTH__HMAC_SECRETS", SECRET));
    assert!(ok, "{stderr:?}");
    assert!(stdout.contains("applied 11 migration"), "{stdout}");
    let (ok, _, stdout) = run(sidechat()
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .env("SIDECHAT__AUTH__HMAC_SECRETS", SECRET));
    assert!(ok);
    assert!(stdout.contains("applied 0 migration"), "{stdout}");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let mut child = serve(&fresh_database())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port: u16 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("listening on port ")
                .nth(1)
                .and_then(|p| p.trim().parse().ok())
        })
        .expect("the service logs its port");
    // A request with a token in its query string: the access log must show the path
    // and never the token.
    let token = alice_token();
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        http,
        "GET /v1/me/unread?token={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Drain the log so the child never blocks on a full pipe.
    let drained = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let pid = child.id();
    let (exited_tx, exited) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });
    let Ok(status) = exited.recv_timeout(Duration::from_secs(20)) else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("did not stop within 20 s of SIGTERM");
    };
    let status = status.unwrap();
    assert!(status.success(), "exit status {status}");
    let log = drained.join().unwrap();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("/v1/me/unread")), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains(&token)),
        "a token reached the log"
    );
    assert!(
        !log.iter().any(|l| l.contains(SECRET)),
        "the HMAC secret reached the log"
    );
}

/// `sidechat dev` in `dir`; returns the child and its port once the banner is out.
fn start_dev(dir: &std::path::Path) -> (std::process::Child, u16) {
    let mut child = sidechat()
        .args(["dev"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The dev banner's addresses carry the port: "http://127.0.0.1:<port>/...".
    // Its own Postgres starts first (initdb on the first run).
    let port = announced_port(
        child.stdout.take().unwrap(),
        "http://127.0.0.1:",
        Duration::from_secs(60),
    );
    (child, port)
}

fn stop(child: &mut std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
}

fn http_status(port: u16, path: &str) -> String {
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        http,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_string()
}

/// Whether a process whose command line contains `needle` is alive.
fn process_running(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .contains(needle)
            })
            .unwrap_or(false)
    })
}

/// A deploy on a laptop: `sidechat dev` stopped and started again at once. The first
/// process's watchdog (which stops its Postgres should it die without cleaning up) must
/// not stop the Postgres the second one started on the same data directory.
#[test]
fn dev_restarted_at_once_keeps_its_new_database() {
    let dir = std::env::temp_dir().join(format!("sidechat-dev-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (mut first, _) = start_dev(&dir);
    let first_watchdog = format!("kill -0 {} ", first.id());
    assert!(process_running(&first_watchdog), "the watchdog runs");
    stop(&mut first);
    let (mut second, port) = start_dev(&dir);
    // The old watchdog notices within a second; wait until it has acted and gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while process_running(&first_watchdog) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old watchdog never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = http_status(port, "/readyz");
    stop(&mut second);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ready.contains("200"),
        "after the old watchdog ended: {ready}"
    );
}

/// The example ConfigMap's file is one the service accepts: a key renamed or misspelt
/// there would stop every pod at start-up.
#[test]
fn the_kubernetes_config_map_holds_valid_settings() {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/configmap.yaml"))
        .unwrap();
    let file: String = yaml
        .split_once("sidechat.toml: |\n")
        .expect("the ConfigMap holds sidechat.toml")
        .1
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(file.contains("[limits]"), "{file}");
    // What the Secret adds as environment variables.
    let secrets = "[auth]\nhmac_secrets = [\"from-the-secret-0123456789abcdef\"]\n\
                   [broker]\nredis_url = \"redis://:pw@redis:6379/0\"\n";
    let loaded = sidechat::settings::Settings::load(&sidechat::settings::Sources {
        overlays: vec![secrets, &file],
        ..Default::default()
    });
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}
