//! sidechat: a chat service beside an existing web app.
//!
//! Dependencies point one way: `transport`/`http` -> `chat` -> `store`, `hub`.

pub mod auth;
pub mod chat;
pub mod dev;
pub mod hub;
pub mod settings;
pub mod store;
