// Verifies a sidechat webhook (PROTOCOL.md §8) with node:crypto; in Express, take the raw
// body (the signature covers its exact bytes):
//
//   app.post("/hooks/sidechat", express.raw({ type: "application/json" }), (req, res) => {
//     if (!valid(req.get("X-Sidechat-Signature"), req.body, process.env.SIDECHAT_WEBHOOK_SECRET)) {
//       return res.sendStatus(401);
//     }
//     const event = JSON.parse(req.body);
//     // Drop a retry you already handled: remember event.id (X-Sidechat-Event-Id).
//     res.sendStatus(200);
//   });
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

// Refuse calls signed longer ago than this: a captured call cannot be replayed later.
const TOLERANCE_S = 300;

export function valid(header, body, secret, now = Math.floor(Date.now() / 1000)) {
  const fields = String(header ?? "")
    .split(",")
    .map((part) => part.trim().split(/=(.*)/s, 2))
    .filter((field) => field.length === 2);
  const t = fields.find(([key]) => key === "t")?.[1];
  if (!t || !/^\d+$/.test(t) || Math.abs(now - Number(t)) > TOLERANCE_S) return false;
  const expected = createHmac("sha256", secret).update(`${t}.`).update(body).digest();
  return fields.some(([key, value]) => {
    if (key !== "v1") return false;
    const given = Buffer.from(value, "hex");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

// node node_verify.mjs "<X-Sidechat-Signature>" < body  (exit 0: genuine)
if (import.meta.url === `file://${process.argv[1]}`) {
  const body = readFileSync(0);
  process.exit(valid(process.argv[2], body, process.env.SIDECHAT_WEBHOOK_SECRET) ? 0 : 1);
}
