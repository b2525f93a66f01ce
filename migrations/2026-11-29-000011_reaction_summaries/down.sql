ALTER TABLE messages DROP COLUMN reactions;
DROP FUNCTION sidechat_reactions_of(BIGINT);
