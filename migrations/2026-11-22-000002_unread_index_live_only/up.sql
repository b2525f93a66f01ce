-- The unread summary, counts and receipts all ask for live (not deleted) unread rows.
-- With deleted_at out of the predicate, each of them had to visit the table row of every
-- unread message to check it; with it in, they are answered from the index alone.
-- CONCURRENTLY: a large messages table keeps taking writes while this builds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_unread_live_idx ON messages (recipient_id, topic, id)
    WHERE NOT is_delivered AND recipient_id IS NOT NULL AND deleted_at IS NULL;
