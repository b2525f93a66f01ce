//! Typed settings, loaded in layers and validated once at start-up.
//!
//! `config/default.toml` is compiled in and holds every key, so the structs below have no
//! serde defaults: a key missing from the defaults or an unknown key in any layer is an
//! error, and a test keeps the file and the code in step.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Every key with its default and a comment; the first layer of every load.
mod validate;

pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
/// The layer `sidechat dev` adds: demo page on, development secrets.
pub const DEVELOPMENT_TOML: &str = include_str!("../../config/development.toml");

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 4] = [
    "server.allowed_origins",
    "auth.hmac_secrets",
    "api.keys",
    "broker.redis_urls",
];

/// The layers one load reads, lowest first (after the embedded defaults).
#[derive(Debug, Default)]
pub struct Sources<'a> {
    /// TOML text compiled in or built by a caller (development, test).
    pub overlays: Vec<&'a str>,
    /// `--config FILE`.
    pub file: Option<&'a Path>,
    /// Read `SIDECHAT__*` and `DATABASE_URL`.
    pub environment: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{0}")]
    Invalid(String),
}

/// A value that must never reach a log: `Debug` prints `[redacted]`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub api: ApiSettings,
    pub chat: ChatSettings,
    pub broker: BrokerSettings,
    pub limits: LimitSettings,
    pub webhooks: WebhookSettings,
    pub push: PushSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json` (see `crate::logging`).
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// 0: none, `port` serves everything (see `http::Listener`).
    pub internal_port: u16,
    pub allowed_origins: Vec<String>,
    pub idle_timeout_s: u64,
    pub demo: bool,
    pub workers: usize,
    pub shutdown_timeout_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Holds a password, so it is a secret.
    pub url: Secret,
    pub pool_size: u32,
    pub run_migrations: bool,
    pub connect_timeout_s: u64,
    pub write_window_ms: u64,
    pub receipts_window_ms: u64,
    pub list_window_ms: u64,
    pub list_defer_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub hmac_secrets: Vec<Secret>,
    pub jwt_secret: Secret,
    pub jwt_public_key_file: String,
    pub jwt_algorithm: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub leeway_s: u64,
    pub disconnect_on_expiry: bool,
    /// A token whose `exp` lies further ahead than this is refused; 0 = no limit.
    pub max_token_ttl_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub keys: Vec<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    pub history_limit: u32,
    pub max_body_bytes: usize,
    pub presence_room_limit: u32,
    pub typing_interval_ms: u64,
    /// Who opens one-to-one chats: "open" (any two users) or "host" (`PUT /api/v1/chats`).
    pub direct: String,
    /// Users one user may block (every replica holds every block in memory).
    pub max_blocks_per_user: u32,
    /// How long after sending an author may edit a message; 0 = no limit.
    pub edit_window_s: u64,
    /// Distinct emoji one message may carry.
    pub max_reactions: u32,
    /// Messages sent more than this many days ago are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// Messages deleted per transaction.
    pub retention_batch: u32,
    /// Pause between two batches, in milliseconds.
    pub retention_pause_ms: u64,
    /// From the end of one retention run to the start of the next, in seconds.
    pub retention_every_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub kind: String,
    pub redis_url: Secret,
    /// Seed nodes of a Redis Cluster (`kind = "redis-cluster"`); the rest is discovered.
    pub redis_urls: Vec<Secret>,
    pub redis_prefix: String,
    pub presence_ttl_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub messages_per_second: u32,
    pub burst: u32,
    pub joins_per_second: u32,
    pub joins_burst: u32,
    pub events_per_second: u32,
    pub events_burst: u32,
    pub abuse_close_s: u64,
    pub connections_per_user: u32,
    pub joins_per_connection: u32,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: Secret,
    pub delay_s: u64,
    pub retry_initial_ms: u64,
    pub retry_for_s: u64,
    pub concurrency: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    pub vapid_public_key: String,
    pub vapid_private_key_file: String,
    pub subject: String,
    pub allow_local_endpoints: bool,
}

/// The JWT algorithms `auth.jwt_algorithm` may name. Here, not in `auth`: settings are
/// read by everything and import nothing of the service.
pub const JWT_ALGORITHMS: [&str; 6] = ["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"];

/// The most messages one join or `history` may return (PROTOCOL.md §3).
pub const MAX_HISTORY_LIMIT: u32 = 500;
/// Largest clock skew an operator may allow; more would make expiry meaningless.
const MAX_LEEWAY_S: u64 = 300;

impl Settings {
    /// Loads the embedded defaults, then `sources`, and validates the result.
    pub fn load(sources: &Sources<'_>) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        for overlay in &sources.overlays {
            builder = builder.add_source(config::File::from_str(overlay, config::FileFormat::Toml));
        }
        if let Some(path) = sources.file {
            if !path.is_file() {
                return Err(SettingsError::Invalid(format!(
                    "--config {}: no such file",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(PathBuf::from(path))
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        if sources.environment {
            let mut env = config::Environment::with_prefix("SIDECHAT")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .try_parsing(true);
            for key in LIST_KEYS {
                env = env.with_list_parse_key(key);
            }
            builder = builder.add_source(env);
            if let Ok(url) = std::env::var("DATABASE_URL") {
                builder = builder.set_override("database.url", url)?;
            }
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loud warnings for settings that are legal but unsafe in production.
    pub fn insecure_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for secret in self
            .auth
            .hmac_secrets
            .iter()
            .chain(std::iter::once(&self.auth.jwt_secret))
        {
            if !secret.is_empty() && secret.expose().len() < 32 {
                warnings.push(
                    "auth: a token secret is shorter than 32 bytes; anyone who guesses it can sign in as any user".to_string(),
                );
                break;
            }
        }
        if self.server.allowed_origins.is_empty() {
            warnings.push(
                "server.allowed_origins is empty: any web page may open sockets with a user's token"
                    .to_string(),
            );
        }
        if self.push.allow_local_endpoints {
            warnings.push(
                "push.allow_local_endpoints = true: any signed-in user can make this server POST to addresses inside its network".to_string(),
            );
        }
        if self.auth.max_token_ttl_s == 0 {
            warnings.push(
                "auth.max_token_ttl_s = 0: a token minted with a far-off exp works until then, stolen or not".to_string(),
            );
        }
        if self.auth.leeway_s > 60 {
            warnings.push(format!(
                "auth.leeway_s = {}: expired tokens stay valid that long",
                self.auth.leeway_s
            ));
        }
        warnings
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.server.idle_timeout_s)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_s)
    }

    /// Whether offline notifications are on: a webhook, Web Push, or both.
    pub fn notifies_offline(&self) -> bool {
        !self.webhooks.url.is_empty() || !self.push.vapid_private_key_file.is_empty()
    }

    /// How long a connection may keep pushing over budget before it is closed (4004).
    pub fn abuse_close(&self) -> Option<Duration> {
        (self.limits.abuse_close_s > 0).then(|| Duration::from_secs(self.limits.abuse_close_s))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.database.connect_timeout_s.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(overlay: &str) -> Result<Settings, SettingsError> {
        Settings::load(&Sources {
            overlays: vec![overlay],
            ..Sources::default()
        })
    }

    #[test]
    fn the_embedded_defaults_name_every_key_the_code_reads() {
        // Deserialising the defaults alone fails if the code gained a key the file lacks
        // (no serde defaults) or the file holds a key the code lacks (deny_unknown_fields).
        let parsed: Result<Settings, _> = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|c| c.try_deserialize());
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_name() {
        let err = load("[auth]\nhmac_secrets=[\"0123456789abcdef0123456789abcdef\"]\nleway_s = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("leway_s"), "{err}");
    }

    #[test]
    fn settings_without_any_token_secret_are_refused() {
        let err = load("").unwrap_err().to_string();
        assert!(err.contains("auth.hmac_secrets"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key_and_rule() {
        let secret = "[auth]\nhmac_secrets=[\"0123456789abcdef0123456789abcdef\"]\n";
        let cases = [
            ("leeway_s = 301", "auth.leeway_s: must be <= 300"),
            ("jwt_algorithm = \"none\"", "auth.jwt_algorithm"),
            (
                "[chat]\nhistory_limit = 501",
                "chat.history_limit: must be between 1 and 500",
            ),
            ("[broker]\nkind = \"carrier-pigeon\"", "broker.kind"),
            ("[broker]\nkind = \"redis\"", "broker.redis_url: required"),
            (
                "[broker]\nkind = \"redis-cluster\"",
                "broker.redis_urls: required",
            ),
            ("[log]\nformat = \"xml\"", "log.format: must be"),
            ("[chat]\nretention_batch = 0", "chat.retention_batch"),
            ("[chat]\nretention_every_s = 0", "chat.retention_every_s"),
            ("[chat]\nretention_days = -1", "retention_days"),
            (
                "[chat]\nretention_days = 100000",
                "chat.retention_days: at most",
            ),
            (
                "[server]\nport = 4000\ninternal_port = 4000",
                "server.internal_port: must differ from server.port",
            ),
        ];
        for (extra, expected) in cases {
            let err = load(&format!("{secret}{extra}")).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra}: got {err}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let settings =
            load("[auth]\nhmac_secrets=[\"very-secret-value-0123456789abcdef\"]").unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("very-secret-value"));
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn the_development_layer_is_valid() {
        assert!(load(DEVELOPMENT_TOML).is_ok());
    }
}
