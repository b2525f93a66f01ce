//! Any text a browser can send as a Phoenix frame: decoding never panics, and what it
//! decodes parses as a request or is refused with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidechat::chat::Request;
use sidechat::transport::phoenix::PhoenixV2;
use sidechat::transport::{Codec, Inbound};

fuzz_target!(|text: &str| {
    if let Ok(Inbound::Event { event, payload, .. }) = PhoenixV2.decode(text) {
        let _ = Request::parse(&event, &payload);
    }
});
