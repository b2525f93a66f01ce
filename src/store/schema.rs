// @generated automatically by Diesel CLI.

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
    }
}

diesel::joinable!(room_members -> rooms (room_id));

diesel::allow_tables_to_appear_in_same_query!(messages, push_subscriptions, room_members, rooms,);
