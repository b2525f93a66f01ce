-- Each message carries a summary of its reactions, kept by whoever changes them in the
-- same transaction, so a page of history (and every summary and list) reads them with
-- the message row: probing `reactions` for each of a page's 50 messages cost more than
-- the page itself. The `reactions` table stays the truth; the summary is derived.
--
-- The summary is PROTOCOL.md §11's `reactions`: each emoji in the order first used, its
-- count, and its first ten users. NULL when there are none.
CREATE FUNCTION sidechat_reactions_of(message BIGINT) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT jsonb_agg(jsonb_build_object('emoji', emoji, 'count', n, 'users', users)
                     ORDER BY first, emoji)
    FROM (SELECT emoji, count(*) AS n, min(created_at) AS first,
                 (array_agg(user_id ORDER BY created_at, user_id))[1:10] AS users
          FROM reactions WHERE message_id = message GROUP BY emoji) r
$$;

ALTER TABLE messages ADD COLUMN reactions JSONB;

UPDATE messages SET reactions = sidechat_reactions_of(id)
WHERE id IN (SELECT DISTINCT message_id FROM reactions);
