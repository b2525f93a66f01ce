CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_unread_idx ON messages (recipient_id, topic, id)
    WHERE NOT is_delivered AND recipient_id IS NOT NULL;
