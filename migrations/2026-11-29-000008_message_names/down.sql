ALTER TABLE messages DROP COLUMN user_name;
