-- Every message sidechat has stored. A row is never rewritten by a send: edits and
-- deletions (host API) set edited_at / deleted_at; erasure removes the row.
CREATE TABLE messages (
    id           BIGSERIAL   PRIMARY KEY,
    topic        TEXT        NOT NULL,
    sender_id    TEXT        NOT NULL,
    -- The other side of a one-to-one or support conversation; NULL in rooms (their
    -- unread state is the member's read cursor) and for messages to a site's staff.
    recipient_id TEXT,
    body         TEXT        NOT NULL,
    kind         TEXT        NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'bot', 'system')),
    status       TEXT        NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'streaming')),
    meta         JSONB       NOT NULL DEFAULT '{}'::jsonb,
    client_ref   TEXT,
    sent_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    edited_at    TIMESTAMPTZ,
    deleted_at   TIMESTAMPTZ,
    -- True once the recipient's client reported the message seen (`read`).
    is_delivered BOOLEAN     NOT NULL DEFAULT false,
    -- A resend with the same client_ref returns the stored message (idempotency).
    CONSTRAINT messages_sender_client_ref_key UNIQUE (sender_id, client_ref)
);

-- History pages: newest first within a conversation.
CREATE INDEX messages_topic_id_idx ON messages (topic, id DESC);
-- The unread summary at login and read receipts touch only unread rows addressed to one
-- user (room messages have no recipient: their unread state is the member's cursor).
-- With id in it, the summary's count and newest id per topic come from the index alone.
CREATE INDEX messages_unread_idx ON messages (recipient_id, topic, id)
    WHERE NOT is_delivered AND recipient_id IS NOT NULL;
-- What a site's staff have not read: visitors' messages in support conversations.
CREATE INDEX messages_support_unread_idx ON messages (topic)
    WHERE NOT is_delivered AND recipient_id IS NULL AND topic LIKE 'support:%';

CREATE TABLE rooms (
    id         TEXT        PRIMARY KEY,
    name       TEXT        NOT NULL DEFAULT '',
    kind       TEXT        NOT NULL DEFAULT 'group',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE room_members (
    room_id      TEXT        NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id      TEXT        NOT NULL,
    -- Everything up to this message id is read by this member.
    last_read_id BIGINT      NOT NULL DEFAULT 0,
    joined_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

CREATE INDEX room_members_user_id_idx ON room_members (user_id);
