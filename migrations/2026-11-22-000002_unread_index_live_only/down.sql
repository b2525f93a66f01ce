DROP INDEX CONCURRENTLY IF EXISTS messages_unread_live_idx;
