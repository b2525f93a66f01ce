-- Replaced by messages_unread_live_idx (a statement of its own: CONCURRENTLY cannot
-- share a transaction).
DROP INDEX CONCURRENTLY IF EXISTS messages_unread_idx;
