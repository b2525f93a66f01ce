// Node: a simple HMAC token with the built-in crypto module.
import { createHmac } from "node:crypto";

export function sidechatToken(userId, secret, ttlSeconds = 3600) {
  const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
  const signature = createHmac("sha256", secret).update(`${userId}:${exp}`).digest("hex");
  return `${userId}:${exp}:${signature}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(sidechatToken(process.argv[2], process.env.SIDECHAT_HMAC_SECRET));
}
