//! One integration-test binary: the real service, real sockets, a real Postgres.

mod helpers;

mod chat_flow;
mod errors;
mod health;
mod tokens;
