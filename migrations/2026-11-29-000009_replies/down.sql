DROP INDEX messages_reply_to;
ALTER TABLE messages DROP COLUMN reply_to_body;
ALTER TABLE messages DROP COLUMN reply_to_user;
ALTER TABLE messages DROP COLUMN reply_to;
