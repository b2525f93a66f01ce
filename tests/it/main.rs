//! One integration-test binary: the real service, real sockets, a real Postgres.

// Test code fails loudly on purpose: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod helpers;
mod receiver;

mod actioncable;
mod actions;
mod architecture;
mod blocks;
mod budgets;
mod chat_flow;
mod check_config;
mod conversations;
mod crash;
mod errors;
mod failover;
mod faults;
mod health;
mod host_api;
mod hostile;
mod list_moves;
mod logs;
mod migrations;
mod observability;
mod open_chats;
mod ports;
mod push;
mod query_plans;
mod receipts;
mod redis_cluster;
mod replicas;
mod reports;
mod retention;
mod rooms;
mod shutdown;
mod startup;
mod support;
mod tokens;
mod webhooks;
