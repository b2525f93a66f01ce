-- Browsers' Web Push subscriptions. A subscription's endpoint is unique to one browser
-- profile; registering it again (another user signed in there) moves it to that user.
CREATE TABLE push_subscriptions (
    endpoint   TEXT        PRIMARY KEY,
    user_id    TEXT        NOT NULL,
    -- The browser's keys (RFC 8291), base64url as PushSubscription.toJSON() gives them.
    p256dh     TEXT        NOT NULL,
    auth       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX push_subscriptions_user_id_idx ON push_subscriptions (user_id);
