-- Offline notifications (webhooks, Web Push), written by the writer in the same
-- transaction as the message they tell of, so a crash loses none.
--
-- A message waiting to be told: one row per message, addressed to its recipient, or with
-- no recipient for a room (every member but the sender, expanded when it falls due).
-- Rows of one (topic, recipient) fall due together once the oldest is due: a burst in
-- the `webhooks.delay_s` window travels in one delivery.
CREATE TABLE outbox (
    message_id   BIGINT      PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    topic        TEXT        NOT NULL,
    recipient_id TEXT,
    due_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX outbox_due_at_idx ON outbox (due_at);
CREATE INDEX outbox_group_idx ON outbox (topic, recipient_id);

-- One call to make: to the webhook (target '') or to one Web Push subscription (target
-- = its endpoint). `id` is the event id the host sees on every retry. The body is built
-- at each attempt from `message_ids`, less what was read or deleted meanwhile.
CREATE TABLE deliveries (
    id              TEXT        PRIMARY KEY,
    sink            TEXT        NOT NULL CHECK (sink IN ('webhook', 'push')),
    target          TEXT        NOT NULL,
    recipient_id    TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    message_ids     BIGINT[]    NOT NULL,
    attempts        INTEGER     NOT NULL DEFAULT 0,
    -- Also the lease: a worker taking a delivery moves this past its request timeout,
    -- so another replica takes it only if this one died mid-call.
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX deliveries_next_attempt_at_idx ON deliveries (next_attempt_at);
CREATE INDEX deliveries_recipient_id_idx ON deliveries (recipient_id);
