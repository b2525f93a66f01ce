// @generated automatically by Diesel CLI.

diesel::table! {
    deliveries (id) {
        id -> Text,
        sink -> Text,
        target -> Text,
        recipient_id -> Text,
        topic -> Text,
        message_ids -> Array<Int8>,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        report_id -> Nullable<Int8>,
    }
}

diesel::table! {
    messages (id) {
        id -> Int8,
        topic -> Text,
        sender_id -> Text,
        recipient_id -> Nullable<Text>,
        body -> Text,
        kind -> Text,
        status -> Text,
        meta -> Jsonb,
        client_ref -> Nullable<Text>,
        sent_at -> Timestamptz,
        edited_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
        is_delivered -> Bool,
        user_name -> Nullable<Text>,
        reply_to -> Nullable<Int8>,
        reply_to_user -> Nullable<Text>,
        reply_to_body -> Nullable<Text>,
        reactions -> Nullable<Jsonb>,
    }
}

diesel::table! {
    outbox (message_id) {
        message_id -> Int8,
        topic -> Text,
        recipient_id -> Nullable<Text>,
        due_at -> Timestamptz,
    }
}

diesel::table! {
    push_subscriptions (endpoint) {
        endpoint -> Text,
        user_id -> Text,
        p256dh -> Text,
        auth -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    room_members (room_id, user_id) {
        room_id -> Text,
        user_id -> Text,
        last_read_id -> Int8,
        joined_at -> Timestamptz,
    }
}

diesel::table! {
    rooms (id) {
        id -> Text,
        name -> Text,
        kind -> Text,
        created_at -> Timestamptz,
        last_message_id -> Nullable<Int8>,
        last_message_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    conversation_members (user_id, topic) {
        user_id -> Text,
        topic -> Text,
    }
}

diesel::table! {
    conversations (topic) {
        topic -> Text,
        last_message_id -> Int8,
        last_message_at -> Timestamptz,
        relist_after -> Nullable<Int8>,
    }
}

diesel::table! {
    blocks (blocker_id, blocked_id) {
        blocker_id -> Text,
        blocked_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    open_chats (topic) {
        topic -> Text,
        opened_at -> Timestamptz,
    }
}

diesel::table! {
    reactions (message_id, emoji, user_id) {
        message_id -> Int8,
        emoji -> Text,
        user_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    reports (id) {
        id -> Int8,
        message_id -> Int8,
        reporter_id -> Text,
        reason -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(outbox -> messages (message_id));
diesel::joinable!(reports -> messages (message_id));
diesel::joinable!(room_members -> rooms (room_id));

diesel::allow_tables_to_appear_in_same_query!(
    blocks,
    open_chats,
    reactions,
    reports,
    conversation_members,
    conversations,
    deliveries,
    messages,
    outbox,
    push_subscriptions,
    room_members,
    rooms,
);
