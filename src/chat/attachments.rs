//! `meta.attachments` (PROTOCOL.md §11): files the host stored, described on a message.
//! Checked on every message and edit that carries them, so a client can trust what it
//! renders: at most `MAX_ATTACHMENTS`, each an `https` URL with a name, a type and a size.

use serde_json::Value;

pub const MAX_ATTACHMENTS: usize = 10;
/// Longest name and type, in bytes.
const MAX_TEXT_BYTES: usize = 256;

/// Whether `meta` has no `attachments`, or well-formed ones.
pub fn valid(meta: &serde_json::Map<String, Value>) -> bool {
    let Some(attachments) = meta.get("attachments") else {
        return true;
    };
    let Some(list) = attachments.as_array() else {
        return false;
    };
    list.len() <= MAX_ATTACHMENTS && list.iter().all(valid_one)
}

fn valid_one(attachment: &Value) -> bool {
    let text = |key: &str| {
        attachment
            .get(key)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty() && t.len() <= MAX_TEXT_BYTES)
    };
    let https = attachment
        .get("url")
        .and_then(Value::as_str)
        .and_then(|url| reqwest::Url::parse(url).ok())
        .is_some_and(|url| url.scheme() == "https" && url.host_str().is_some());
    let media_type = text("type").is_some_and(|t| {
        t.split_once('/')
            .is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty() && !t.contains(' '))
    });
    https
        && text("name").is_some()
        && media_type
        && attachment.get("size").and_then(Value::as_u64).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(attachments: Value) -> serde_json::Map<String, Value> {
        json!({"attachments": attachments})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn well_formed_attachments_pass_and_the_rest_are_refused() {
        let good = json!({"url": "https://files.example/a.png", "name": "a.png", "type": "image/png", "size": 1234});
        assert!(valid(&serde_json::Map::new()));
        assert!(valid(&meta(json!([good.clone()]))));
        assert!(valid(&meta(json!(vec![good.clone(); 10]))));
        assert!(!valid(&meta(json!(vec![good.clone(); 11]))), "at most ten");
        assert!(!valid(&meta(json!({"url": "https://x"}))), "a list");
        let mut broken = Vec::new();
        for (key, value) in [
            ("url", json!("http://files.example/a.png")),
            ("url", json!("javascript:alert(1)")),
            ("url", json!("https://")),
            ("name", json!("")),
            ("type", json!("png")),
            ("type", json!(5)),
            ("size", json!(-1)),
            ("size", json!("12")),
        ] {
            let mut one = good.clone();
            one[key] = value;
            broken.push(one);
        }
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("size");
        broken.push(missing);
        for one in broken {
            assert!(!valid(&meta(json!([one]))), "{one}");
        }
    }
}
