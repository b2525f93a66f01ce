//! Any topic string: parsing never panics, and a parsed topic prints back to a string
//! that parses to the same topic (one canonical spelling).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidechat::chat::Topic;

fuzz_target!(|raw: &str| {
    if let Ok(topic) = Topic::parse(raw) {
        let canonical = topic.to_string();
        let again = Topic::parse(&canonical).expect("a canonical topic parses");
        assert_eq!(again, topic, "{raw:?} -> {canonical:?}");
    }
});
