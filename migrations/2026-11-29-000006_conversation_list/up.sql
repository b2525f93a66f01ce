-- Every user's conversation list (PROTOCOL.md §10), kept with the messages so that the
-- list is read from an index, not from the user's whole history.
--
-- One-to-one and support conversations: one row per member (both users of a `chat:`,
-- the visitor of a `support:`), moved by the writer once per batch per conversation, in
-- the same statement as the batch's INSERT.
CREATE TABLE user_conversations (
    user_id         TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    -- The newest live message; the row goes when the conversation has none left.
    last_message_id BIGINT      NOT NULL,
    last_message_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, topic)
);
-- A page of the list: newest activity first, the topic breaking ties (the cursor).
CREATE INDEX user_conversations_recent_idx
    ON user_conversations (user_id, last_message_at DESC, topic DESC);

-- Rooms keep their activity on their own row: one update per batch, however many
-- members the room has. A member's list reads it through room_members.
ALTER TABLE rooms ADD COLUMN last_message_id BIGINT;
ALTER TABLE rooms ADD COLUMN last_message_at TIMESTAMPTZ;

-- An upgraded deployment shows the conversations it already had.
INSERT INTO user_conversations (user_id, topic, last_message_id, last_message_at)
SELECT member, topic, max(id), max(sent_at)
FROM messages
CROSS JOIN LATERAL (VALUES
    (CASE WHEN topic LIKE 'chat:%' THEN sender_id END),
    (CASE WHEN topic LIKE 'chat:%' THEN recipient_id
          WHEN topic LIKE 'support:%' THEN substr(topic, 9) END)
) AS members(member)
WHERE deleted_at IS NULL AND member IS NOT NULL
GROUP BY member, topic;

UPDATE rooms r SET last_message_id = latest.id, last_message_at = latest.at
FROM (
    SELECT substr(topic, 6) AS room_id, max(id) AS id, max(sent_at) AS at
    FROM messages
    WHERE topic LIKE 'room:%' AND deleted_at IS NULL
    GROUP BY 1
) latest
WHERE r.id = latest.room_id;
