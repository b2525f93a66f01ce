-- Replies (PROTOCOL.md §11): the message replied to, and a quote of it kept on the
-- reply, so that every Message carries its quote without a join. Editing the original
-- rewrites its replies' quotes; deleting or erasing it clears them (the quote is then
-- null), in the same transaction.
ALTER TABLE messages ADD COLUMN reply_to BIGINT;
ALTER TABLE messages ADD COLUMN reply_to_user TEXT;
ALTER TABLE messages ADD COLUMN reply_to_body TEXT;
CREATE INDEX messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;
