// The official `phoenix` npm client, unchanged, through the whole one-to-one flow.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Server, hmacToken, uid } from "../lib/server.mjs";
import { Presence, connect, join, next, push } from "../lib/phoenix.mjs";

const server = new Server();
before(() => server.start());
after(() => server.cleanup());

test("the official client chats one-to-one: history, live messages, receipts, typing, presence", async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const aliceSocket = connect(server, hmacToken(alice));
  const bobSocket = connect(server, hmacToken(bob));
  try {
    const bobLobby = bobSocket.channel(`user:${bob}`);
    const summary = await join(bobLobby);
    assert.deepEqual(summary, { unread: [], total: 0 });

    const aliceChat = aliceSocket.channel(`chat:${alice}:${bob}`, { limit: 10 });
    const presence = new Presence(aliceChat);
    const history = await join(aliceChat);
    assert.deepEqual(history, { messages: [], more: false });

    // Bob is only in his lobby: he is notified.
    const notified = next(bobLobby, "notification");
    const { message } = await push(aliceChat, "new_msg", { body: "hi bob", client_ref: "e2e-1" });
    assert.equal(message.body, "hi bob");
    const notification = await notified;
    assert.equal(notification.count, 1);
    assert.equal(notification.message.id, message.id);

    // Bob joins under the other spelling, gets the history, and Presence syncs.
    const bobChat = bobSocket.channel(`chat:${bob}:${alice}`);
    const bothOnline = new Promise((res) =>
      presence.onSync(() => {
        if (presence.list((id) => id).sort().join() === [alice, bob].sort().join()) res();
      }),
    );
    const bobHistory = await join(bobChat);
    assert.deepEqual(bobHistory.messages.map((m) => m.id), [message.id]);
    await bothOnline;

    const typing = next(bobChat, "typing");
    aliceChat.push("typing", { typing: true });
    assert.deepEqual(await typing, { user_id: alice, typing: true });

    const live = next(bobChat, "new_msg");
    const second = (await push(aliceChat, "new_msg", { body: "are you there?" })).message;
    assert.equal((await live).id, second.id);

    const receipt = next(aliceChat, "read");
    assert.deepEqual(await push(bobChat, "read", { message_id: second.id }), { marked: 2 });
    assert.deepEqual(await receipt, { user_id: bob, message_id: second.id });

    // A resend with the same client_ref is the stored message, not a new one.
    const again = await push(aliceChat, "new_msg", { body: "hi bob", client_ref: "e2e-1" });
    assert.equal(again.message.id, message.id);

    // Errors arrive as the protocol's reasons.
    await assert.rejects(push(aliceChat, "new_msg", { body: "   " }), { reason: "invalid_payload" });
    const stranger = aliceSocket.channel(`chat:${bob}:someone-else`);
    await assert.rejects(join(stranger), /unauthorized/);
    stranger.leave();
  } finally {
    aliceSocket.disconnect();
    bobSocket.disconnect();
  }
});

test("the lobby at the next login lists what is still unread", async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const aliceSocket = connect(server, hmacToken(alice));
  const chat = aliceSocket.channel(`chat:${alice}:${bob}`);
  await join(chat);
  await push(chat, "new_msg", { body: "one" });
  const { message: last } = await push(chat, "new_msg", { body: "two" });
  aliceSocket.disconnect();

  const bobSocket = connect(server, hmacToken(bob));
  try {
    const summary = await join(bobSocket.channel(`user:${bob}`));
    assert.equal(summary.total, 2);
    assert.equal(summary.unread[0].topic, [alice, bob].sort().reduce((a, b) => `chat:${a}:${b}`));
    assert.equal(summary.unread[0].last_message.id, last.id);
  } finally {
    bobSocket.disconnect();
  }
});
