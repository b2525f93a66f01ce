//! The rules of settings that serde cannot check: each refusal names the key and the
//! rule, in one line.

use super::{JWT_ALGORITHMS, MAX_HISTORY_LIMIT, MAX_LEEWAY_S, Secret, Settings, SettingsError};

impl Settings {
    /// Checks every rule that serde cannot, naming the key and the rule.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |msg: String| Err(SettingsError::Invalid(msg));
        let auth = &self.auth;
        if auth.hmac_secrets.iter().all(Secret::is_empty)
            && auth.jwt_secret.is_empty()
            && auth.jwt_public_key_file.is_empty()
        {
            return invalid(
                "auth: no way to verify tokens: set auth.hmac_secrets, auth.jwt_secret or auth.jwt_public_key_file".into(),
            );
        }
        if auth.hmac_secrets.iter().any(Secret::is_empty) {
            return invalid("auth.hmac_secrets: an empty secret is not allowed".into());
        }
        if auth.leeway_s > MAX_LEEWAY_S {
            return invalid(format!("auth.leeway_s: must be <= {MAX_LEEWAY_S}"));
        }
        if !JWT_ALGORITHMS.contains(&auth.jwt_algorithm.as_str()) {
            return invalid(format!(
                "auth.jwt_algorithm: must be one of {}",
                JWT_ALGORITHMS.join(", ")
            ));
        }
        if self.chat.history_limit == 0 || self.chat.history_limit > MAX_HISTORY_LIMIT {
            return invalid(format!(
                "chat.history_limit: must be between 1 and {MAX_HISTORY_LIMIT}"
            ));
        }
        if !["open", "host"].contains(&self.chat.direct.as_str()) {
            return invalid(format!(
                "chat.direct: must be \"open\" or \"host\", not {:?}",
                self.chat.direct
            ));
        }
        if self.chat.retention_days > 36_500 {
            return invalid(
                "chat.retention_days: at most 36500 (a century); 0 keeps messages forever".into(),
            );
        }
        if self.chat.retention_batch == 0 || self.chat.retention_batch > 100_000 {
            return invalid("chat.retention_batch: must be between 1 and 100000".into());
        }
        if self.chat.retention_every_s == 0 {
            return invalid("chat.retention_every_s: must be at least 1".into());
        }
        if self.chat.max_body_bytes == 0 {
            return invalid("chat.max_body_bytes: must be at least 1".into());
        }
        if self.limits.outbound_queue == 0 {
            return invalid("limits.outbound_queue: must be at least 1".into());
        }
        if self.limits.max_frame_bytes < 1024 {
            return invalid("limits.max_frame_bytes: must be at least 1024".into());
        }
        let limits = &self.limits;
        for (rate, burst, rate_key, burst_key) in [
            (
                limits.messages_per_second,
                limits.burst,
                "messages_per_second",
                "burst",
            ),
            (
                limits.joins_per_second,
                limits.joins_burst,
                "joins_per_second",
                "joins_burst",
            ),
            (
                limits.events_per_second,
                limits.events_burst,
                "events_per_second",
                "events_burst",
            ),
        ] {
            if rate > 0 && burst == 0 {
                return invalid(format!(
                    "limits.{burst_key}: must be at least 1 when limits.{rate_key} is set"
                ));
            }
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size: must be at least 1".into());
        }
        if self.server.internal_port != 0 && self.server.internal_port == self.server.port {
            return invalid(
                "server.internal_port: must differ from server.port (0 turns it off)".into(),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return invalid("log.format: must be \"text\" or \"json\"".into());
        }
        if self.server.shutdown_timeout_s == 0 {
            return invalid("server.shutdown_timeout_s: must be at least 1".into());
        }
        match self.broker.kind.as_str() {
            "memory" => {}
            "redis" if self.broker.redis_url.is_empty() => {
                return invalid("broker.redis_url: required when broker.kind = \"redis\"".into());
            }
            "redis" => {}
            "redis-cluster" if self.broker.redis_urls.iter().all(Secret::is_empty) => {
                return invalid(
                    "broker.redis_urls: required when broker.kind = \"redis-cluster\" (seed nodes, e.g. [\"redis://redis-0:6379\"])".into(),
                );
            }
            "redis-cluster" => {}
            _ => {
                return invalid(
                    "broker.kind: must be \"memory\", \"redis\" or \"redis-cluster\"".into(),
                );
            }
        }
        if self.broker.redis_prefix.is_empty()
            || self.broker.redis_prefix.contains(char::is_whitespace)
        {
            return invalid("broker.redis_prefix: must be a non-empty word".into());
        }
        if self.broker.presence_ttl_s < 3 {
            return invalid("broker.presence_ttl_s: must be at least 3".into());
        }
        self.validate_offline()
    }

    /// `[webhooks]` and `[push]`: either off, or complete.
    fn validate_offline(&self) -> Result<(), SettingsError> {
        let invalid = |msg: &str| Err(SettingsError::Invalid(msg.to_owned()));
        let hooks = &self.webhooks;
        if !hooks.url.is_empty() {
            let scheme_ok = hooks.url.starts_with("https://") || hooks.url.starts_with("http://");
            if !scheme_ok || hooks.url.parse::<reqwest::Url>().is_err() {
                return invalid("webhooks.url: must be an absolute http:// or https:// URL");
            }
            if hooks.secret.is_empty() {
                return invalid(
                    "webhooks.secret: required when webhooks.url is set (the host verifies calls with it)",
                );
            }
        }
        if hooks.delay_s > 3600 {
            return invalid("webhooks.delay_s: must be at most 3600");
        }
        if hooks.retry_initial_ms == 0 {
            return invalid("webhooks.retry_initial_ms: must be at least 1");
        }
        if hooks.retry_for_s == 0 {
            return invalid("webhooks.retry_for_s: must be at least 1");
        }
        if hooks.concurrency == 0 {
            return invalid("webhooks.concurrency: must be at least 1");
        }
        let push = &self.push;
        let any_push = !push.vapid_private_key_file.is_empty()
            || !push.vapid_public_key.is_empty()
            || !push.subject.is_empty();
        if any_push {
            if push.vapid_private_key_file.is_empty() {
                return invalid("push.vapid_private_key_file: required to send Web Push");
            }
            if !(push.subject.starts_with("mailto:") || push.subject.starts_with("https://")) {
                return invalid(
                    "push.subject: required to send Web Push, a mailto: or https:// URL push services can reach you at",
                );
            }
        }
        Ok(())
    }
}
