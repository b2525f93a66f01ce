//! Log lines: text for people (the default), or one JSON object per line for a log
//! pipeline (`log.format = "json"`). Both are env_logger, filtered by `RUST_LOG`; the
//! structured fields (`conn`, `user`, `topic`, `code`, ...) travel as the `log` crate's
//! key-values, so every line carries them the same way whatever the format.
//!
//! The logger starts before the settings are read (their own warnings must show), so the
//! format is a switch the settings flip once loaded.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::kv::{Key, Value, VisitSource};
use serde_json::{Map, Value as Json};

static JSON: AtomicBool = AtomicBool::new(false);

/// Starts the process's logger at `default_level` unless `RUST_LOG` says otherwise.
pub fn init(default_level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format(|out, record| {
            let line = if JSON.load(Ordering::Relaxed) {
                json_line(record)
            } else {
                text_line(record)
            };
            writeln!(out, "{line}")
        })
        .init();
}

/// `"json"` or `"text"` (validated with the settings).
pub fn set_format(format: &str) {
    JSON.store(format == "json", Ordering::Relaxed);
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `[ts LEVEL target] message key=value ...`
fn text_line(record: &log::Record<'_>) -> String {
    let mut line = format!(
        "[{} {:<5} {}] {}",
        now(),
        record.level(),
        record.target(),
        record.args()
    );
    let mut fields = Fields::default();
    let _ = record.key_values().visit(&mut fields);
    for (key, value) in fields.0 {
        let value = match value {
            Json::String(text) => text,
            other => other.to_string(),
        };
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

/// `{"ts", "level", "target", "msg", ...fields}`, encoded by serde_json.
fn json_line(record: &log::Record<'_>) -> String {
    let mut fields = Fields::default();
    let _ = record.key_values().visit(&mut fields);
    let mut object = Map::new();
    object.insert("ts".into(), now().into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    object.insert("msg".into(), record.args().to_string().into());
    for (key, value) in fields.0 {
        // A field never overwrites the four above.
        object.entry(key).or_insert(value);
    }
    Json::Object(object).to_string()
}

/// A record's key-values, in order: numbers and booleans as such, the rest as text.
#[derive(Default)]
struct Fields(Vec<(String, Json)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            Json::from(n)
        } else if let Some(n) = value.to_i64() {
            Json::from(n)
        } else if let Some(b) = value.to_bool() {
            Json::from(b)
        } else {
            Json::from(value.to_string())
        };
        self.0.push((key.as_str().to_owned(), json));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_line(json: bool) -> String {
        let fields: [(&str, Value<'_>); 3] = [
            ("conn", Value::from(7u64)),
            ("user", Value::from("al\"ice")),
            ("msg", Value::from("not the message")),
        ];
        let render = if json { json_line } else { text_line };
        // One statement: `format_args!` lives only until its end.
        render(
            &log::Record::builder()
                .args(format_args!("closed: {}", "a \"quoted\"\nline"))
                .level(log::Level::Info)
                .target("sidechat::transport")
                .key_values(&fields)
                .build(),
        )
    }

    #[test]
    fn a_json_line_is_one_object_with_the_fields() {
        let line = record_line(true);
        assert!(!line.contains('\n'), "{line}");
        let parsed: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["level"], "INFO");
        assert_eq!(parsed["target"], "sidechat::transport");
        assert_eq!(parsed["msg"], "closed: a \"quoted\"\nline");
        assert_eq!(parsed["conn"], 7);
        assert_eq!(parsed["user"], "al\"ice");
        assert!(parsed["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_text_line_appends_the_fields() {
        let line = record_line(false);
        assert!(
            line.contains("INFO  sidechat::transport] closed: a"),
            "{line}"
        );
        assert!(
            line.ends_with(" conn=7 user=al\"ice msg=not the message"),
            "{line}"
        );
    }
}
