//! Reports (PROTOCOL.md §10): a user flags a message of a conversation they joined; the
//! host hears of it by a signed webhook from the outbox and lists reports.

use serde::Serialize;
use utoipa::ToSchema;

use super::{Actor, Chat, Message, Reason, ReportParams, Topic, storage};
use crate::store::{self, reports};

/// A report, as the host lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    pub id: i64,
    /// The message as it stands now (a tombstone once deleted).
    pub message: Message,
    pub reporter: String,
    pub reason: Option<String>,
    /// `2026-11-22T10:00:00.123Z`, as every time in the protocol.
    pub created_at: String,
}

/// A page of reports, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportPage {
    pub reports: Vec<Report>,
    /// More reports follow: pass the last `id` as `after`.
    pub more: bool,
}

impl From<reports::ReportRow> for Report {
    fn from(row: reports::ReportRow) -> Self {
        Report {
            id: row.id,
            message: Message::from(row.message),
            reporter: row.reporter_id,
            reason: row.reason,
            created_at: super::message::timestamp(row.created_at),
        }
    }
}

/// Reports a page holds when the host names no limit, and at most.
pub const REPORTS_DEFAULT_LIMIT: i64 = 50;
pub const REPORTS_MAX_LIMIT: i64 = 200;

impl Chat {
    /// `actor` reports a live message of `topic`, which they joined. A repeat of the
    /// same report changes nothing; the first is told to the host once.
    pub async fn report(
        &self,
        actor: &Actor,
        topic: &Topic,
        params: ReportParams,
    ) -> Result<(), Reason> {
        if !topic.is_conversation() {
            return Err(Reason::UnknownEvent);
        }
        let (topic, reporter, webhook) = (
            topic.to_string(),
            actor.user_id.to_string(),
            self.config.report_webhook,
        );
        let made = store::blocking(&self.pool, move |c| {
            let report = reports::NewReport {
                topic: &topic,
                message_id: params.message_id.get(),
                reporter: &reporter,
                reason: params.reason.as_deref(),
            };
            reports::add(c, &report, webhook)
        })
        .await
        .map_err(storage)?;
        if made.is_some() {
            self.metrics.reports.inc();
        }
        Ok(())
    }

    /// Reports after the one numbered `after`, oldest first.
    pub async fn reports(
        &self,
        after: Option<i64>,
        limit: Option<i64>,
    ) -> Result<ReportPage, Reason> {
        let limit = limit.unwrap_or(REPORTS_DEFAULT_LIMIT);
        if !(1..=REPORTS_MAX_LIMIT).contains(&limit) {
            return Err(Reason::InvalidPayload);
        }
        let (rows, more) = store::blocking(&self.pool, move |c| reports::page(c, after, limit))
            .await
            .map_err(storage)?;
        Ok(ReportPage {
            reports: rows.into_iter().map(Report::from).collect(),
            more,
        })
    }
}
