// A deploy: the server restarts under connected clients. They reconnect by themselves,
// rejoin with `after`, and end with every message exactly once.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Server, hmacToken, uid } from "../lib/server.mjs";
import { connect, join, next, push } from "../lib/phoenix.mjs";

const server = new Server();
before(() => server.start());
after(() => server.cleanup());

test("clients recover every message after a restart, with no duplicate", { timeout: 60_000 }, async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const topic = `chat:${alice}:${bob}`;
  const aliceSocket = connect(server, hmacToken(alice));
  const bobSocket = connect(server, hmacToken(bob));
  const seen = new Map(); // id -> times bob saw it
  let lastSeen = 0;
  const record = (m) => {
    seen.set(m.id, (seen.get(m.id) ?? 0) + 1);
    lastSeen = Math.max(lastSeen, m.id);
  };
  try {
    const aliceChat = aliceSocket.channel(topic);
    // Params as a function: every rejoin asks for what came after the last message seen.
    const bobChat = bobSocket.channel(topic, () => (lastSeen ? { after: lastSeen } : {}));
    bobChat.on("new_msg", record);
    // The join push is resent on every rejoin; its hooks fire each time.
    let onRejoin = null;
    bobChat.joinPush.receive("ok", (reply) => onRejoin?.(reply));
    let onAliceRejoin = null;
    aliceChat.joinPush.receive("ok", () => onAliceRejoin?.());
    await join(aliceChat);
    const first = await join(bobChat);
    first.messages.forEach(record);

    const sent = [];
    for (const body of ["before-1", "before-2"]) {
      const arrived = next(bobChat, "new_msg", (m) => m.body === body);
      sent.push((await push(aliceChat, "new_msg", { body, client_ref: body })).message.id);
      await arrived;
    }

    // Bob drops off; the server restarts; alice writes while bob is away.
    bobSocket.disconnect();
    const aliceBack = new Promise((res) => {
      onAliceRejoin = res;
    });
    await server.stop();
    await server.start();
    // Alice's client reconnects and rejoins by itself; she writes once it has.
    await aliceBack;
    for (const body of ["while-away-1", "while-away-2", "while-away-3"]) {
      sent.push((await push(aliceChat, "new_msg", { body, client_ref: body })).message.id);
    }

    // Bob comes back: the rejoin (with after) returns exactly what he missed.
    const recovered = new Promise((res) => {
      onRejoin = res;
    });
    bobSocket.connect();
    const reply = await recovered;
    reply.messages.forEach(record);
    assert.deepEqual(reply.messages.map((m) => m.body), ["while-away-1", "while-away-2", "while-away-3"]);

    const live = next(bobChat, "new_msg", (m) => m.body === "after");
    sent.push((await push(aliceChat, "new_msg", { body: "after", client_ref: "after" })).message.id);
    await live;

    assert.deepEqual([...seen.keys()].sort((a, b) => a - b), sent);
    assert.ok([...seen.values()].every((n) => n === 1), `duplicates: ${JSON.stringify([...seen])}`);
  } finally {
    aliceSocket.disconnect();
    bobSocket.disconnect();
  }
});
