//! Applying one batch of the writer's: in one transaction, in order, the inserts of a
//! run in one statement.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use diesel::Connection;
use diesel::pg::PgConnection;

use super::Error;
use super::messages::{self, Lists};
use super::models::{MessageRow, NewMessage};
use super::mutation::{Mutation, Outcome, Stored};

/// Per-request results of a committed batch; `Err` for the whole batch means nothing
/// was committed.
pub(super) type BatchResult = Result<Vec<Result<Outcome, Error>>, Error>;

/// Applies one batch in one transaction, in order. Another replica's writer inserting
/// the same client_ref at the same moment is no error: the insert waits for it, skips
/// the row, and the lookup then finds theirs.
///
/// A batch of new messages and nothing else, with no outbox to fill, is one INSERT:
/// atomic on its own, so it runs without BEGIN and COMMIT around it. At a low rate,
/// where every message is its own batch, that is two round trips of three saved.
pub(super) fn apply_batch(
    conn: &mut PgConnection,
    batch: &[Mutation],
    outbox: Option<Duration>,
    lists: Lists,
) -> BatchResult {
    let only_inserts: Option<Vec<&NewMessage>> = batch
        .iter()
        .map(|m| match m {
            Mutation::Insert(message) => Some(message),
            _ => None,
        })
        .collect();
    if let (None, Some(inserts)) = (outbox, only_inserts) {
        return insert_run(conn, &inserts, lists);
    }
    conn.transaction(|conn| {
        let outcomes = apply_batch_once(conn, batch, lists)?;
        if let Some(delay) = outbox {
            let created: Vec<&MessageRow> = outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Ok(Outcome::Inserted(stored)) if stored.created => Some(&stored.row),
                    _ => None,
                })
                .collect();
            super::outbox::enqueue(conn, &created, delay)?;
        }
        Ok(outcomes)
    })
}

fn apply_batch_once(conn: &mut PgConnection, batch: &[Mutation], lists: Lists) -> BatchResult {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut inserts: Vec<&NewMessage> = Vec::new();
    for mutation in batch {
        match mutation {
            Mutation::Insert(message) => inserts.push(message),
            other => {
                // Keep the order: the inserts queued before this change go first.
                outcomes.extend(insert_run(conn, &std::mem::take(&mut inserts), lists)?);
                outcomes.push(apply_one(conn, other, lists)?);
            }
        }
    }
    outcomes.extend(insert_run(conn, &inserts, lists)?);
    Ok(outcomes)
}

/// One mutation on its own. The outer `Err` fails the transaction; the inner one is
/// this request's answer (unknown message, body too long) and changes nothing.
fn apply_one(
    conn: &mut PgConnection,
    mutation: &Mutation,
    lists: Lists,
) -> Result<Result<Outcome, Error>, Error> {
    Ok(match mutation {
        Mutation::Insert(message) => insert_run(conn, &[message], lists)?
            .pop()
            .unwrap_or_else(|| Err(Error::Unavailable("the insert returned nothing".into()))),
        Mutation::Edit(edit) => {
            messages::plan_for_now(conn)?;
            messages::edit(conn, edit)?.map(Outcome::Edited)
        }
        Mutation::Delete { id, by } => {
            messages::tombstone(conn, *id, by.as_ref())?.map(Outcome::Deleted)
        }
        Mutation::EraseUser { user_id } => {
            Ok(Outcome::Erased(super::erasure::erase_user(conn, user_id)?))
        }
    })
}

/// Inserts a run of messages in one statement. A resend with a `client_ref` already
/// stored (skipped by the unique key) or earlier in the run is answered with that row.
///
/// Once the INSERT has returned, nothing fails the run as a whole: outside a
/// transaction its rows are already committed, and a run answered `Unavailable` would be
/// retried and stored twice. A row that cannot be accounted for fails only its request.
fn insert_run(
    conn: &mut PgConnection,
    run: &[&NewMessage],
    lists: Lists,
) -> Result<Vec<Result<Outcome, Error>>, Error> {
    if run.is_empty() {
        return Ok(Vec::new());
    }
    // Within the run, a repeated (sender, client_ref) is the first one again.
    enum Source {
        Row(usize),
        SameAs(usize),
    }
    let mut to_insert: Vec<&NewMessage> = Vec::with_capacity(run.len());
    let mut first_in_run: HashMap<(&str, &str), usize> = HashMap::new();
    let mut sources = Vec::with_capacity(run.len());
    for &message in run {
        let key = message
            .client_ref
            .as_deref()
            .map(|r| (message.sender_id.as_str(), r));
        let source = match key.map(|key| first_in_run.entry(key)) {
            Some(Entry::Occupied(seen)) => Source::SameAs(*seen.get()),
            Some(Entry::Vacant(first)) => {
                first.insert(to_insert.len());
                to_insert.push(message);
                Source::Row(to_insert.len() - 1)
            }
            None => {
                to_insert.push(message);
                Source::Row(to_insert.len() - 1)
            }
        };
        sources.push(source);
    }

    // Rows come back in the order given, less the ones the unique key skipped.
    let mut returned = messages::insert_all(conn, &to_insert, lists)?
        .into_iter()
        .peekable();
    let mut rows: Vec<Option<(MessageRow, bool)>> = vec![None; to_insert.len()];
    let mut resent: Vec<usize> = Vec::new();
    for (index, message) in to_insert.iter().enumerate() {
        let this_one = |row: &MessageRow| {
            row.sender_id == message.sender_id
                && row.client_ref == message.client_ref
                && row.topic == message.topic
        };
        match (returned.next_if(this_one), rows.get_mut(index)) {
            (Some(row), Some(slot)) => *slot = Some((row, true)),
            (None, _) if message.client_ref.is_some() => resent.push(index),
            _ => log::error!("writer: an insert of the batch was skipped"),
        }
    }
    if !resent.is_empty() {
        let pairs: Vec<(&str, &str)> = resent
            .iter()
            .filter_map(|&i| {
                let m = to_insert.get(i)?;
                Some((m.sender_id.as_str(), m.client_ref.as_deref()?))
            })
            .collect();
        // A transaction of its own when the insert ran alone (a savepoint otherwise):
        // the lookup plans for the table as it is now.
        let stored = conn
            .transaction(|conn| {
                messages::plan_for_now(conn)?;
                messages::by_client_refs(conn, &pairs)
            })
            .unwrap_or_else(|e| {
                log::warn!(
                    "writer: looking up {} resent messages failed: {e}",
                    pairs.len()
                );
                Vec::new()
            });
        for row in stored {
            let index = resent.iter().copied().find(|&i| {
                to_insert
                    .get(i)
                    .is_some_and(|m| row.sender_id == m.sender_id && row.client_ref == m.client_ref)
            });
            if let Some(slot) = index.and_then(|i| rows.get_mut(i)) {
                *slot = Some((row, false));
            }
        }
    }
    let answer = |index: usize, repeated: bool| {
        rows.get(index)
            .cloned()
            .flatten()
            .map(|(row, created)| {
                Ok(Outcome::Inserted(Stored {
                    row,
                    created: created && !repeated,
                }))
            })
            .unwrap_or_else(|| Err(Error::Unavailable("the message could not be stored".into())))
    };
    Ok(sources
        .into_iter()
        .map(|source| match source {
            Source::Row(index) => answer(index, false),
            Source::SameAs(index) => answer(index, true),
        })
        .collect())
}
