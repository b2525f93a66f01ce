// The token recipes in docs/tokens/, each run with its real language and library; the
// server must accept every token they mint, for the user they name.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { DEV_HMAC_SECRET, DEV_JWT_SECRET, Server, uid } from "../lib/server.mjs";

const recipes = resolve(import.meta.dirname, "..", "..", "docs", "tokens");
// Node resolves a recipe's imports next to the file: run the Node ones from here, where
// node_modules holds jsonwebtoken.
const nodeCopies = resolve(import.meta.dirname, "..", ".recipes");

const server = new Server();
before(async () => {
  await server.start();
  mkdirSync(nodeCopies, { recursive: true });
});
after(async () => {
  rmSync(nodeCopies, { recursive: true, force: true });
  await server.cleanup();
});

function mint(interpreter, file, args) {
  let path = join(recipes, file);
  if (interpreter === "node") {
    copyFileSync(path, join(nodeCopies, file));
    path = join(nodeCopies, file);
  }
  const env = { ...process.env, SIDECHAT_HMAC_SECRET: DEV_HMAC_SECRET, SIDECHAT_JWT_SECRET: DEV_JWT_SECRET };
  return execFileSync(interpreter, [path, ...args], { env, encoding: "utf8" }).trim();
}

async function status(path, token) {
  const response = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return response.status;
}

const cases = [
  ["ruby", "rails_hmac.rb", false],
  ["ruby", "rails_jwt.rb", true],
  ["python3", "django_hmac.py", false],
  ["python3", "django_jwt.py", true],
  ["node", "node_hmac.mjs", false],
  ["node", "node_jwt.mjs", true],
  ["php", "php_hmac.php", false],
  ["php", "php_jwt.php", true],
];

for (const [interpreter, file, carriesRole] of cases) {
  test(`${file} mints a token the server accepts`, async () => {
    const user = uid("host-user");
    const token = mint(interpreter, file, [user]);
    assert.equal(await status("/v1/me/unread", token), 200);
    // The token names this user: their own chat is readable, someone else's is not.
    assert.equal(await status(`/v1/conversations/chat:${user}:peer/messages`, token), 200);
    assert.equal(await status("/v1/conversations/chat:other:peer/messages", token), 403);
    if (carriesRole) {
      const staff = mint(interpreter, file, [uid("agent"), "staff"]);
      assert.equal(await status("/v1/conversations/support:some-visitor/messages", staff), 200);
      assert.equal(await status("/v1/conversations/support:some-visitor/messages", token), 403);
    }
  });
}
