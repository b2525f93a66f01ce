-- Who may talk to whom (PROTOCOL.md §10): blocks, one-to-one chats the host opened, and
-- reports of messages.

-- A user's blocks. Every replica holds a copy in memory (sends and notifications read
-- it); this table is the truth it is loaded from. The second index serves erasure and
-- "who blocks this sender" in the outbox.
CREATE TABLE blocks (
    blocker_id TEXT        NOT NULL,
    blocked_id TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);
CREATE INDEX blocks_blocked ON blocks (blocked_id);

-- With `chat.direct = "host"`: the `chat:a:b` topics the host opened (read on join).
CREATE TABLE open_chats (
    topic     TEXT        PRIMARY KEY,
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One report per reporter and message. No foreign key to messages: erasing a sender
-- removes their messages and, in the same transaction, the reports on them.
CREATE TABLE reports (
    id          BIGSERIAL   PRIMARY KEY,
    message_id  BIGINT      NOT NULL,
    reporter_id TEXT        NOT NULL,
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (message_id, reporter_id)
);
CREATE INDEX reports_reporter ON reports (reporter_id);

-- A delivery that tells the host of a report (`message.reported`) instead of unread
-- messages. It travels through the same outbox, signing and retries.
ALTER TABLE deliveries ADD COLUMN report_id BIGINT;

-- Set when an erasure took a member off a conversation's lists: the newest message id
-- then. The first message after it puts the conversation's members back (an erased user
-- who comes back and chats is listed again); older messages moved late never do.
ALTER TABLE conversations ADD COLUMN relist_after BIGINT;
