// The demo page in headless Chromium (Debian's package, driven by playwright-core):
// two pages as two users exchange messages, see typing and a read receipt; the sidebar
// lists every conversation, and block, unblock and report work from it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { Server, hmacToken, uid } from "../lib/server.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const artifacts = resolve(import.meta.dirname, "..", "artifacts");
const server = new Server();
let browser;

before(async () => {
  await server.start();
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // As root in CI Chromium needs --no-sandbox; the rest keeps it off the network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await server.cleanup();
});

async function signIn(user) {
  const page = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
  await page.goto(`${server.url}/demo`);
  await page.fill("#token", hmacToken(user));
  await page.click("#connect");
  await page.waitForSelector(`#status:has-text("connected as ${user}")`);
  return page;
}

// Opens a conversation from the sidebar's form and waits until it can be written in.
async function openChat(page, peer) {
  await page.fill("#peer", peer);
  await page.click("#open");
  await page.waitForSelector("#body:not([disabled])");
}

test("two people chat on the demo page with typing and read receipts", async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const alicePage = await signIn(alice);
  const bobPage = await signIn(bob);

  // Alice opens a chat with bob and writes; bob is away from it, so his lobby shows it.
  await openChat(alicePage, bob);
  await alicePage.fill("#body", "hello from the demo");
  await alicePage.click("#send");
  await alicePage.waitForSelector('.message.mine:has-text("hello from the demo")');
  const item = bobPage.locator(".conversation-item", { hasText: alice });
  await item.locator(".badge", { hasText: "1" }).waitFor();

  // Bob opens it from his lobby, sees the message, and reading it shows alice a receipt.
  await bobPage.bringToFront();
  await item.click();
  await bobPage.waitForSelector('.message:not(.mine):has-text("hello from the demo")');
  await alicePage.waitForSelector('.message.mine .receipt:has-text("read")');

  // Bob types: alice sees it. Bob answers: alice sees it.
  await bobPage.type("#body", "hi alice");
  await alicePage.waitForSelector(`#typing:has-text("${bob} is typing")`);
  await bobPage.click("#send");
  await alicePage.waitForSelector('.message:not(.mine):has-text("hi alice")');
  await alicePage.waitForSelector(`#online:has-text("${bob}")`);

  mkdirSync(artifacts, { recursive: true });
  await alicePage.screenshot({ path: join(artifacts, "demo-alice.png") });
  await bobPage.screenshot({ path: join(artifacts, "demo-bob.png") });
});

test("staff see the support inbox on the demo page", async () => {
  const visitor = uid("visitor");
  const visitorPage = await signIn(visitor);
  await openChat(visitorPage, `support:${visitor}`);
  await visitorPage.fill("#body", "I need help");
  await visitorPage.click("#send");
  await visitorPage.waitForSelector('.message.mine:has-text("I need help")');

  const staff = await (await browser.newContext()).newPage();
  const staffToken = (await import("jsonwebtoken")).default.sign(
    { sub: uid("agent"), role: "staff", exp: Math.floor(Date.now() / 1000) + 600 },
    (await import("../lib/server.mjs")).DEV_JWT_SECRET,
    { algorithm: "HS256" },
  );
  await staff.goto(`${server.url}/demo?token=${encodeURIComponent(staffToken)}`);
  const conversation = staff.locator("#inbox .conversation-item", { hasText: `support:${visitor}` });
  await conversation.locator(".badge", { hasText: "1" }).waitFor();
  await conversation.click();
  await staff.waitForSelector('.message:has-text("I need help")');
  await staff.fill("#body", "happy to help");
  await staff.click("#send");
  await visitorPage.waitForSelector('.message:not(.mine):has-text("happy to help")');
  await staff.waitForSelector('.message.mine:has-text("happy to help")');
  await staff.screenshot({ path: join(artifacts, "demo-staff-inbox.png") });
});

async function hostApi(method, path, body) {
  const { API_KEY } = await import("../lib/server.mjs");
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status}`);
  return response.status === 204 ? null : response.json();
}

test("the sidebar lists every conversation live; block, unblock and report from it", async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const room = uid("club");
  await hostApi("PUT", `/api/v1/rooms/${room}`, { name: "Book club", members: [alice, bob] });
  const alicePage = await signIn(alice);
  // A room is listed as soon as one is a member, messages or not.
  const clubItem = alicePage.locator(".conversation-item", { hasText: "Book club" });
  await clubItem.locator(".preview", { hasText: "no messages yet" }).waitFor();

  // Bob writes: alice's sidebar shows the chat at the top, with a badge and a preview.
  const bobPage = await signIn(bob);
  await openChat(bobPage, alice);
  await bobPage.fill("#body", "first");
  await bobPage.click("#send");
  const bobItem = alicePage.locator(".conversation-item", { hasText: bob });
  await bobItem.locator(".badge", { hasText: "1" }).waitFor();
  await bobItem.locator(".preview", { hasText: `${bob}: first` }).waitFor();
  assert.equal(await alicePage.locator(".conversation-item").first().getAttribute("data-topic"),
    await bobItem.getAttribute("data-topic"), "the newest activity is on top");

  // Read, it stays in the list without a badge, also after a fresh sign-in.
  await bobItem.click();
  await alicePage.waitForSelector('.message:not(.mine):has-text("first")');
  await bobItem.locator(".badge").waitFor({ state: "detached" });
  await alicePage.reload();
  await alicePage.fill("#token", hmacToken(alice));
  await alicePage.click("#connect");
  await alicePage.locator(".conversation-item", { hasText: bob })
    .locator(".preview", { hasText: "first" }).waitFor();
  await alicePage.locator(".conversation-item", { hasText: "Book club" }).waitFor();

  // Alice blocks bob: his next message is refused. Unblocked, it goes through.
  await alicePage.locator(".conversation-item", { hasText: bob }).click();
  await alicePage.waitForSelector('.message:not(.mine):has-text("first")');
  await alicePage.click("#block");
  await alicePage.waitForSelector(`#status:has-text("blocked ${bob}")`);
  await alicePage.waitForSelector(`#block:has-text("Unblock ${bob}")`);
  await bobPage.fill("#body", "second");
  await bobPage.click("#send");
  await bobPage.waitForSelector('#status:has-text("not sent: blocked")');
  await alicePage.click("#block");
  await alicePage.waitForSelector(`#status:has-text("unblocked ${bob}")`);
  await bobPage.fill("#body", "third");
  await bobPage.click("#send");
  const third = alicePage.locator(".message:not(.mine)", { hasText: "third" });
  await third.waitFor();
  assert.equal(await alicePage.locator('.message:has-text("second")').count(), 0, "the blocked message was not stored");

  // Alice reports it; the host lists the report.
  await third.locator(".report").click();
  await third.locator(".report", { hasText: "reported" }).waitFor();
  const { reports } = await hostApi("GET", "/api/v1/reports?limit=200");
  const mine = reports.filter((r) => r.reporter === alice);
  assert.equal(mine.length, 1);
  assert.equal(mine[0].message.body, "third");

  mkdirSync(artifacts, { recursive: true });
  await alicePage.screenshot({ path: join(artifacts, "demo-sidebar.png") });
});

test("edit, react, reply and delete on the demo page, with names", async () => {
  const [alice, bob] = [uid("alice"), uid("bob")];
  const { DEV_JWT_SECRET } = await import("../lib/server.mjs");
  const named = (await import("jsonwebtoken")).default.sign(
    { sub: alice, name: "Alice Liddell", exp: Math.floor(Date.now() / 1000) + 600 },
    DEV_JWT_SECRET,
    { algorithm: "HS256" },
  );
  const alicePage = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
  await alicePage.goto(`${server.url}/demo?token=${encodeURIComponent(named)}&topic=${encodeURIComponent(bob)}`);
  await alicePage.waitForSelector("#body:not([disabled])");
  const bobPage = await signIn(bob);
  await openChat(bobPage, alice);

  // Alice sends a typo and fixes it; bob sees the fix, marked edited, with her name.
  await alicePage.fill("#body", "helo bob");
  await alicePage.click("#send");
  const typo = alicePage.locator(".message.mine", { hasText: "helo bob" });
  await typo.locator(".action.edit").click();
  await alicePage.fill("#body", "hello bob");
  await alicePage.click("#send");
  const fixed = bobPage.locator(".message:not(.mine)", { hasText: "hello bob" });
  await fixed.locator(".edited").waitFor();
  await fixed.locator(".meta", { hasText: `Alice Liddell (${alice})` }).waitFor();
  await bobPage.waitForSelector(`#online:has-text("Alice Liddell (${alice})")`);

  // Bob answers it: alice sees the quote.
  await fixed.locator(".action.reply").click();
  await bobPage.waitForSelector('#replying:has-text("replying to")');
  await bobPage.fill("#body", "hi alice");
  await bobPage.click("#send");
  const answer = alicePage.locator(".message:not(.mine)", { hasText: "hi alice" });
  await answer.locator(".quote", { hasText: `${alice}: hello bob` }).waitFor();

  // Bob reacts from the picker, alice joins in with a click on the count.
  await fixed.locator(".chip.add").click();
  await fixed.locator(".picker span", { hasText: "👍" }).click();
  const mine = alicePage.locator(".message.mine", { hasText: "hello bob" });
  await mine.locator(".chip", { hasText: "👍 1" }).click();
  await fixed.locator(".chip", { hasText: "👍 2" }).waitFor();
  await mine.locator(".chip.mine", { hasText: "👍 2" }).waitFor();

  // Alice edits again: bob's reply quotes it as it is now, on both pages, live.
  await mine.locator(".action.edit").click();
  await alicePage.fill("#body", "hello bob!");
  await alicePage.click("#send");
  await answer.locator(".quote", { hasText: `${alice}: hello bob!` }).waitFor();
  const bobsAnswer = bobPage.locator(".message.mine", { hasText: "hi alice" });
  await bobsAnswer.locator(".quote", { hasText: "hello bob!" }).waitFor();
  // The reactions outlive the edit.
  await fixed.locator(".chip", { hasText: "👍 2" }).waitFor();

  mkdirSync(artifacts, { recursive: true });
  await alicePage.screenshot({ path: join(artifacts, "demo-actions.png") });

  // Alice takes one back, then the message: it leaves bob's page, and so does the quote.
  await mine.locator(".chip.mine", { hasText: "👍 2" }).click();
  await fixed.locator(".chip", { hasText: "👍 1" }).waitFor();
  await mine.locator(".action.delete").click();
  await fixed.waitFor({ state: "detached" });
  await bobsAnswer.locator(".quote").waitFor({ state: "detached" });
});
