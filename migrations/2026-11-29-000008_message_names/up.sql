-- The sender's display name (a JWT `name`) as it was when the message was sent
-- (PROTOCOL.md §11): shown beside the message without asking the host.
ALTER TABLE messages ADD COLUMN user_name TEXT;
