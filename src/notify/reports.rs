//! Telling the host of a report (`message.reported`, PROTOCOL.md §10): the same outbox,
//! signature and retries as `message.unread`, but sent whoever is online.

use serde_json::json;

use super::{Attempt, Notifier};
use crate::chat::Message;
use crate::store::outbox::{Delivery, Sink};
use crate::store::{self, reports};

impl Notifier {
    /// A `message.reported` webhook: the report as it stands now, whoever is online.
    pub(super) async fn deliver_report(&self, delivery: Delivery, report_id: i64) {
        let report = store::blocking(&self.pool, move |c| reports::get(c, report_id)).await;
        let (attempt, skipped) = match report {
            Err(e) => return log::warn!("notifications: delivery {}: {e}", delivery.id),
            // Erased since: nothing to tell.
            Ok(None) => (Attempt::Delivered, Some("skipped_erased")),
            Ok(Some(report)) => match &self.webhook {
                Some(hook) => (
                    hook.send(&delivery.id, report_body(&delivery, report))
                        .await,
                    None,
                ),
                None => (
                    Attempt::Refused("webhook is off on this replica".into()),
                    None,
                ),
            },
        };
        let settled = self.settle(&delivery, attempt).await;
        self.count(Sink::Webhook, skipped.unwrap_or(settled), 1);
    }
}

/// The `message.reported` event of PROTOCOL.md §10.
fn report_body(delivery: &Delivery, report: reports::ReportRow) -> Vec<u8> {
    json!({
        "id": delivery.id,
        "type": "message.reported",
        "message": Message::from(report.message),
        "reporter": report.reporter_id,
        "reason": report.reason,
    })
    .to_string()
    .into_bytes()
}
