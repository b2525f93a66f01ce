-- Every user's conversation list (PROTOCOL.md §10), kept with the messages so that a
-- page is read from indexes, not from the user's whole history.
--
-- One-to-one and support conversations: their activity in one row per conversation,
-- moved by the writer once per batch in the statement that inserts it. Few columns and
-- no index on the moving ones, with room left in each page, so the move is a HOT
-- update: no index entry is written for it.
CREATE TABLE conversations (
    topic           TEXT        PRIMARY KEY,
    -- The newest live message; the row goes when the conversation has none left.
    last_message_id BIGINT      NOT NULL,
    last_message_at TIMESTAMPTZ NOT NULL
) WITH (fillfactor = 50);

-- Whose list holds them: both users of a `chat:`, the visitor of a `support:`. Written
-- with the conversation's first message; later ones only find the row there.
CREATE TABLE conversation_members (
    user_id TEXT NOT NULL,
    topic   TEXT NOT NULL,
    PRIMARY KEY (user_id, topic)
);

-- Rooms keep their activity on their own row: one update per batch, however many
-- members the room has. A member's list reads it through room_members.
ALTER TABLE rooms ADD COLUMN last_message_id BIGINT;
ALTER TABLE rooms ADD COLUMN last_message_at TIMESTAMPTZ;

-- An upgraded deployment shows the conversations it already had.
INSERT INTO conversations (topic, last_message_id, last_message_at)
SELECT topic, max(id), max(sent_at)
FROM messages
WHERE deleted_at IS NULL AND (topic LIKE 'chat:%' OR topic LIKE 'support:%')
GROUP BY topic;

INSERT INTO conversation_members (user_id, topic)
SELECT DISTINCT member, topic
FROM conversations
CROSS JOIN LATERAL (VALUES
    (CASE WHEN topic LIKE 'chat:%' THEN split_part(topic, ':', 2) END),
    (CASE WHEN topic LIKE 'chat:%' THEN split_part(topic, ':', 3)
          WHEN topic LIKE 'support:%' THEN substr(topic, 9) END)
) AS members(member)
WHERE member IS NOT NULL;

UPDATE rooms r SET last_message_id = latest.id, last_message_at = latest.at
FROM (
    SELECT substr(topic, 6) AS room_id, max(id) AS id, max(sent_at) AS at
    FROM messages
    WHERE topic LIKE 'room:%' AND deleted_at IS NULL
    GROUP BY 1
) latest
WHERE r.id = latest.room_id;
