// Rails' own `@rails/actioncable` consumer against /cable, beside a Phoenix client.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Server, hmacToken, uid } from "../lib/server.mjs";
import { connect, join, next, push } from "../lib/phoenix.mjs";

// The consumer is written for browsers: give it a WebSocket and the two globals it
// touches to watch page visibility.
globalThis.addEventListener ??= () => {};
globalThis.removeEventListener ??= () => {};
globalThis.document ??= { visibilityState: "visible" };
const ActionCable = await import("@rails/actioncable");
ActionCable.adapters.WebSocket = WebSocket;

const server = new Server();
before(() => server.start());
after(() => server.cleanup());

test("a Rails consumer subscribes, performs and receives, with a Phoenix client on the other side", async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const consumer = ActionCable.createConsumer(`${server.ws}/cable?token=${hmacToken(alice)}`);
  const bobSocket = connect(server, hmacToken(bob));
  try {
    const bobChat = bobSocket.channel(`chat:${bob}:${alice}`);
    await join(bobChat);

    const events = [];
    let wake = () => {};
    const nextEvent = (event, filter = () => true) =>
      new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`no ${event} within 10 s`)), 10_000);
        const check = () => {
          const found = events.findIndex((e) => e.event === event && filter(e.payload));
          if (found >= 0) {
            clearTimeout(timer);
            res(events.splice(found, 1)[0].payload);
            return true;
          }
          return false;
        };
        if (!check()) wake = check;
      });
    let confirmed;
    const subscribed = new Promise((res, rej) => {
      confirmed = { res, rej };
    });
    const subscription = consumer.subscriptions.create(
      { channel: "ChatChannel", topic: `chat:${alice}:${bob}` },
      {
        connected: () => confirmed.res(),
        rejected: () => confirmed.rej(new Error("subscription rejected")),
        received: (message) => {
          events.push(message);
          wake();
        },
      },
    );
    await subscribed;
    const joined = await nextEvent("joined");
    assert.deepEqual(joined, { messages: [], more: false });

    const heard = next(bobChat, "new_msg");
    subscription.perform("new_msg", { body: "from rails", ref: "r1" });
    const reply = await nextEvent("reply", (p) => p.ref === "r1");
    assert.equal(reply.status, "ok");
    assert.equal(reply.response.message.body, "from rails");
    assert.equal((await heard).id, reply.response.message.id);

    const { message } = await push(bobChat, "new_msg", { body: "hello rails" });
    const received = await nextEvent("new_msg", (p) => p.id === message.id);
    assert.equal(received.body, "hello rails");

    subscription.perform("read", { message_id: message.id, ref: "r2" });
    assert.deepEqual((await nextEvent("reply", (p) => p.ref === "r2")).response, { marked: 1 });

    // Message actions (PROTOCOL.md §11) by `perform`: reply, edit, delete, react.
    const mine = reply.response.message;
    subscription.perform("new_msg", { body: "quoting you", reply_to: message.id, ref: "r3" });
    const answer = await nextEvent("reply", (p) => p.ref === "r3");
    assert.equal(answer.status, "ok");
    assert.deepEqual(answer.response.message.reply_to, { id: message.id, user_id: bob, body: "hello rails" });
    const updated = next(bobChat, "msg_updated");
    subscription.perform("edit_msg", { id: mine.id, body: "from rails, edited", ref: "r4" });
    const edit = await nextEvent("reply", (p) => p.ref === "r4");
    assert.equal(edit.status, "ok");
    assert.equal(edit.response.message.body, "from rails, edited");
    assert.equal((await updated).body, "from rails, edited");
    subscription.perform("edit_msg", { id: message.id, body: "not mine", ref: "r5" });
    assert.equal((await nextEvent("reply", (p) => p.ref === "r5")).response.reason, "unauthorized");
    const deleted = next(bobChat, "msg_deleted");
    subscription.perform("delete_msg", { id: mine.id, ref: "r6" });
    assert.equal((await nextEvent("reply", (p) => p.ref === "r6")).status, "ok");
    assert.equal((await deleted).id, mine.id);

    // Reactions by `perform`: the Phoenix side hears it, and the message carries it.
    const told = next(bobChat, "reaction");
    subscription.perform("react", { id: message.id, emoji: "👍", ref: "r7" });
    assert.equal((await nextEvent("reply", (p) => p.ref === "r7")).status, "ok");
    assert.deepEqual(await told, { message_id: message.id, emoji: "👍", user_id: alice, on: true });
    const echoed = await nextEvent("reaction", (p) => p.message_id === message.id && p.on);
    assert.equal(echoed.emoji, "👍");
    subscription.perform("react", { id: message.id, emoji: "not an emoji", ref: "r8" });
    assert.equal((await nextEvent("reply", (p) => p.ref === "r8")).response.reason, "invalid_payload");
    subscription.perform("history", { ref: "r9" });
    const page = (await nextEvent("reply", (p) => p.ref === "r9")).response;
    const reacted = page.messages.find((m) => m.id === message.id);
    assert.deepEqual(reacted.reactions, [{ emoji: "👍", count: 1, users: [alice] }]);
    const untold = next(bobChat, "reaction");
    subscription.perform("unreact", { id: message.id, emoji: "👍", ref: "r10" });
    assert.equal((await nextEvent("reply", (p) => p.ref === "r10")).status, "ok");
    assert.equal((await untold).on, false);

    // A conversation that is not the user's is rejected.
    const refused = new Promise((res) =>
      consumer.subscriptions.create({ channel: "ChatChannel", topic: `chat:${bob}:someone` }, { rejected: res }),
    );
    await refused;
  } finally {
    consumer.disconnect();
    bobSocket.disconnect();
  }
});
