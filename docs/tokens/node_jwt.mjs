// Node: a JWT with the `jsonwebtoken` package (npm install jsonwebtoken).
import jwt from "jsonwebtoken";

export function sidechatJwt(userId, secret, { name, staff = false, ttlSeconds = 3600 } = {}) {
  const claims = { sub: String(userId) };
  if (name) claims.name = name;
  if (staff) claims.role = "staff";
  return jwt.sign(claims, secret, { algorithm: "HS256", expiresIn: ttlSeconds });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(sidechatJwt(process.argv[2], process.env.SIDECHAT_JWT_SECRET, { staff: process.argv[3] === "staff" }));
}
