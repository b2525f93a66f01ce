ALTER TABLE rooms DROP COLUMN last_message_at;
ALTER TABLE rooms DROP COLUMN last_message_id;
DROP TABLE conversation_members;
DROP TABLE conversations;
