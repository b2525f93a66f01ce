//! Any text a Rails client can send as an ActionCable frame: decoding never panics, and
//! what it decodes parses as a request or is refused with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidechat::chat::Request;
use sidechat::transport::actioncable::ActionCable;
use sidechat::transport::{Codec, Inbound};

fuzz_target!(|text: &str| {
    if let Ok(Inbound::Event { event, payload, .. }) = ActionCable.decode(text) {
        let _ = Request::parse(&event, &payload);
    }
});
