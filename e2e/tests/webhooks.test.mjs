// The webhook verification recipes in docs/webhooks/, each run with its language on a
// real call from sidechat: a genuine call verifies, a tampered or foreign one does not.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { join, resolve } from "node:path";
import { Server, freePort, uid } from "../lib/server.mjs";

const recipes = resolve(import.meta.dirname, "..", "..", "docs", "webhooks");
const SECRET = "e2e-webhook-secret-0123456789abcdef";

let host;
let hookPort;
const calls = [];
let waiting = null;
let server;

before(async () => {
  hookPort = await freePort();
  host = createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      calls.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200).end();
      waiting?.();
    });
  });
  await new Promise((res) => host.listen(hookPort, "127.0.0.1", res));
  server = new Server({
    SIDECHAT__WEBHOOKS__URL: `http://127.0.0.1:${hookPort}/hooks/sidechat`,
    SIDECHAT__WEBHOOKS__SECRET: SECRET,
  });
  await server.start();
});
after(async () => {
  await server.cleanup();
  host.close();
});

async function nextCall() {
  if (calls.length === 0) {
    await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error("no webhook call in 10 s")), 10_000);
      waiting = () => {
        clearTimeout(timer);
        res();
      };
    });
  }
  return calls.shift();
}

function verifies(interpreter, file, header, body, secret = SECRET) {
  const run = spawnSync(interpreter, [join(recipes, file), header], {
    input: body,
    env: { ...process.env, SIDECHAT_WEBHOOK_SECRET: secret },
  });
  if (run.status !== 0 && run.status !== 1) {
    throw new Error(`${file} failed to run (${run.status}): ${run.stderr}`);
  }
  return run.status === 0;
}

test("every recipe verifies a real call and refuses a forged one", async () => {
  const bob = uid("bob");
  const posted = await server.api("POST", "/api/v1/messages", {
    topic: `chat:alice:${bob}`,
    user_id: "alice",
    body: "héllo, are you there?",
  });
  assert.equal(posted.status, 201);
  const call = await nextCall();
  const header = call.headers["x-sidechat-signature"];
  const event = JSON.parse(call.body);
  assert.equal(event.type, "message.unread");
  assert.equal(event.recipient, bob);
  assert.equal(call.headers["x-sidechat-event-id"], event.id);
  assert.deepEqual(event.messages, [posted.body]);

  const tampered = Buffer.from(String(call.body).replace("are you", "were you"));
  // Signed correctly, an hour ago: a replay.
  const old = Math.floor(Date.now() / 1000) - 3600;
  const stale = `t=${old},v1=${createHmac("sha256", SECRET).update(`${old}.`).update(call.body).digest("hex")}`;
  for (const [interpreter, file] of [
    ["ruby", "rails_verify.rb"],
    ["python3", "django_verify.py"],
    ["node", "node_verify.mjs"],
    ["php", "php_verify.php"],
  ]) {
    assert.ok(verifies(interpreter, file, header, call.body), `${file}: the real call`);
    assert.ok(!verifies(interpreter, file, header, tampered), `${file}: a tampered body`);
    assert.ok(!verifies(interpreter, file, header, call.body, "another-secret"), `${file}: another secret`);
    assert.ok(!verifies(interpreter, file, stale, call.body), `${file}: an old timestamp`);
    assert.ok(!verifies(interpreter, file, "", call.body), `${file}: no header`);
  }
});
