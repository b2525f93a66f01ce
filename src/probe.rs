//! `sidechat check-config --probe`: what the settings point at, tried before a deploy
//! rather than discovered by a pod that will not become ready.

use std::time::Duration;

use crate::settings::Settings;
use crate::{auth, first_line, notify, redact_url, store};

/// One thing tried: what, and how it went (a line for the operator either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub line: String,
}

impl Check {
    fn ok(line: String) -> Check {
        Check { ok: true, line }
    }

    fn failed(line: String) -> Check {
        Check { ok: false, line }
    }
}

/// Reads the key files, connects to Postgres (and reports pending migrations, which are
/// not a failure: `sidechat migrate` applies them) and, with `broker.kind = "redis"`, to
/// Redis. Everything is tried; each failure is its own line naming the setting.
pub fn probe(settings: &Settings) -> Vec<Check> {
    let timeout = settings.connect_timeout();
    let mut checks = vec![keys(settings)];
    if !settings.push.vapid_private_key_file.is_empty() {
        checks.push(match notify::push::read_vapid_key(&settings.push) {
            Ok(_) => Check::ok(format!(
                "push.vapid_private_key_file: {} holds a P-256 key",
                settings.push.vapid_private_key_file
            )),
            Err(e) => Check::failed(e),
        });
    }
    checks.push(database(settings.database.url.expose(), timeout));
    match settings.broker.kind.as_str() {
        "redis" => checks.push(redis(
            "broker.redis_url",
            settings.broker.redis_url.expose(),
            timeout,
        )),
        "redis-cluster" => {
            // Each seed on its own: any one that answers lets the service start, but a
            // seed that does not is worth a line.
            for seed in &settings.broker.redis_urls {
                checks.push(redis("broker.redis_urls", seed.expose(), timeout));
            }
        }
        _ => {}
    }
    checks
}

fn keys(settings: &Settings) -> Check {
    match auth::Verifier::new(&settings.auth) {
        Ok(_) => Check::ok("auth: the token keys load".into()),
        Err(e) => Check::failed(first_line(&e.to_string())),
    }
}

fn database(url: &str, timeout: Duration) -> Check {
    if url.is_empty() {
        return Check::failed("database.url: not set (set DATABASE_URL or database.url)".into());
    }
    let shown = redact_url(url);
    let mut conn = match store::connect(url, timeout) {
        Ok(conn) => conn,
        Err(e) => {
            return Check::failed(format!(
                "database.url: cannot connect to {shown}: {}",
                first_line(&e.to_string())
            ));
        }
    };
    // Asking diesel about pending migrations creates its bookkeeping table: on a database
    // that is not sidechat's (a wrong name in the URL) the probe must not write.
    match store::has_schema(&mut conn) {
        Ok(true) => {}
        Ok(false) => {
            return Check::ok(format!(
                "database.url: {shown} answers; it holds no sidechat schema yet (sidechat migrate creates it; is this the right database?)"
            ));
        }
        Err(e) => {
            return Check::failed(format!(
                "database.url: {shown} answers, but its tables cannot be read: {}",
                first_line(&e.to_string())
            ));
        }
    }
    match store::migrations_applied(&mut conn) {
        Ok(true) => Check::ok(format!(
            "database.url: {shown} answers; the schema is up to date"
        )),
        Ok(false) => Check::ok(format!(
            "database.url: {shown} answers; migrations are pending (sidechat migrate applies them)"
        )),
        Err(e) => Check::failed(format!(
            "database.url: {shown} answers, but its migrations cannot be read: {}",
            first_line(&e.to_string())
        )),
    }
}

fn redis(setting: &str, url: &str, timeout: Duration) -> Check {
    let shown = redact_url(url);
    let answered = redis::Client::open(url).and_then(|client| {
        let mut conn = client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        redis::cmd("PING").query::<String>(&mut conn)
    });
    match answered {
        Ok(_) => Check::ok(format!("{setting}: {shown} answers PING")),
        Err(e) => Check::failed(format!(
            "{setting}: cannot reach {shown}: {}",
            first_line(&e.to_string())
        )),
    }
}
