//! `sidechat check-config --probe`: every setting that names something outside the
//! process is tried, and each failure is one line naming the setting.

use diesel::{Connection, RunQueryDsl};
use sidechat::dev::{ClusterOptions, PgCluster};

use crate::helpers::*;
use crate::startup::{SECRET, run, sidechat, write_temp};

/// A Postgres of this test's own where role `prober` must give its password (the
/// others' clusters trust loopback).
fn cluster_with_a_password() -> PgCluster {
    let data_dir =
        std::env::temp_dir().join(format!("sidechat-probe-{}", uuid::Uuid::new_v4().simple()));
    let pg = PgCluster::start(ClusterOptions {
        data_dir,
        fast_unsafe: true,
        remove_on_stop: true,
        settings: Vec::new(),
    })
    .unwrap();
    let hba = pg.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all prober 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    let mut conn = diesel::PgConnection::establish(&pg.url("postgres")).unwrap();
    diesel::sql_query("CREATE ROLE prober LOGIN PASSWORD 'right-password'")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .unwrap();
    pg
}

#[test]
fn a_wrong_password_an_unreachable_redis_and_a_missing_key_are_one_line_each() {
    let pg = cluster_with_a_password();
    let config = write_temp(
        "probe.toml",
        &format!(
            "[database]\nurl = \"postgres://prober:wrong-password@127.0.0.1:{}/postgres\"\n\
             [broker]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{}/\"\n\
             [push]\nvapid_private_key_file = \"/nonexistent/vapid.pem\"\nsubject = \"mailto:ops@example.com\"\n",
            pg.port(),
            free_port()
        ),
    );
    let (ok, stderr, stdout) = run(sidechat()
        .args(["check-config", "--probe", "--config"])
        .arg(&config)
        .env("SIDECHAT__AUTH__HMAC_SECRETS", SECRET));
    assert!(!ok, "{stdout}");
    assert_eq!(stderr.len(), 3, "one line per failure: {stderr:?}");
    let line = |setting: &str| {
        stderr
            .iter()
            .find(|l| l.starts_with(&format!("sidechat: error: {setting}")))
            .unwrap_or_else(|| panic!("no line for {setting} in {stderr:?}"))
    };
    assert!(
        line("database.url").contains("password authentication failed"),
        "{stderr:?}"
    );
    assert!(
        line("broker.redis_url").contains("cannot reach"),
        "{stderr:?}"
    );
    assert!(line("push.vapid_private_key_file").contains("/nonexistent/vapid.pem"));
    for l in &stderr {
        assert!(!l.contains("wrong-password"), "a password leaked: {l}");
    }
    assert!(
        stdout.contains("ok: auth:"),
        "what works is said too: {stdout}"
    );
}

#[test]
fn a_config_whose_parts_all_answer_passes_the_probe() {
    let config = write_temp(
        "probe-ok.toml",
        &format!(
            "[database]\nurl = \"{}\"\n[broker]\nkind = \"redis\"\nredis_url = \"{}\"\n",
            fresh_database(),
            redis_url()
        ),
    );
    // The positional spelling works as it always did, and wins over SIDECHAT_CONFIG.
    let (ok, stderr, stdout) = run(sidechat()
        .args(["check-config", "--probe"])
        .arg(&config)
        .env("SIDECHAT_CONFIG", "/nonexistent/sidechat.toml")
        .env("SIDECHAT__AUTH__HMAC_SECRETS", SECRET));
    assert!(ok, "{stderr:?} {stdout}");
    assert!(stdout.contains("ok: database.url:"), "{stdout}");
    assert!(stdout.contains("answers PING"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("everything it names answers"),
        "{stdout}"
    );
}
