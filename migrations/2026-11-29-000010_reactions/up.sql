-- Reactions (PROTOCOL.md §11): who reacted to which message with which emoji, once each.
-- A page of history reads those of its messages in one query, by the primary key.
CREATE TABLE reactions (
    message_id BIGINT      NOT NULL,
    emoji      TEXT        NOT NULL,
    user_id    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, emoji, user_id)
);
-- Erasure removes a user's reactions.
CREATE INDEX reactions_user ON reactions (user_id);
