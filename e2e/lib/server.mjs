// Starts the real sidechat binary (`sidechat dev`: its own private Postgres) on a free
// port, in a fresh working directory, and stops it with SIGTERM as a deploy would.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { createHmac } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..");

/// The development HMAC secret of config/development.toml, which `sidechat dev` uses.
export const DEV_HMAC_SECRET = "dev-only-hmac-secret-change-me-0123456789";
export const DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789";
export const API_KEY = "e2e-api-key-0123456789abcdef";

export function binary() {
  const candidates = [process.env.SIDECHAT_BIN, join(root, "target/debug/sidechat"), join(root, "target/release/sidechat")];
  const found = candidates.find((path) => path && existsSync(path));
  if (!found) throw new Error("build sidechat first (cargo build)");
  return found;
}

export function freePort() {
  return new Promise((res, rej) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => res(port));
    });
    server.on("error", rej);
  });
}

/// A simple HMAC token, as PROTOCOL.md §1 mints it.
export function hmacToken(userId, ttlSeconds = 3600) {
  const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
  const sig = createHmac("sha256", DEV_HMAC_SECRET).update(`${userId}:${exp}`).digest("hex");
  return `${userId}:${exp}:${sig}`;
}

/// A unique user id per test run, so runs never see each other's messages.
export function uid(name) {
  return `${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

export class Server {
  /// `env`: settings for this server, e.g. { SIDECHAT__WEBHOOKS__URL: "..." }.
  constructor(env = {}) {
    this.env = env;
    // The postgres user must reach the cluster when this runs as root.
    this.dir = mkdtempSync(join(tmpdir(), "sidechat-e2e-"));
    chmodSync(this.dir, 0o755);
    this.port = null;
    this.child = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    this.child = spawn(binary(), ["dev", "--port", String(this.port)], {
      cwd: this.dir,
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", SIDECHAT__API__KEYS: API_KEY, ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    this.child.stderr.on("data", (chunk) => {
      output += chunk;
      if (process.env.E2E_VERBOSE) process.stderr.write(chunk);
    });
    await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`sidechat did not start in 60 s:\n${output}`)), 60_000);
      this.child.stdout.on("data", (chunk) => {
        if (String(chunk).includes("sidechat is running")) {
          clearTimeout(timer);
          res();
        }
      });
      this.child.on("exit", (code) => {
        clearTimeout(timer);
        rej(new Error(`sidechat exited with ${code}:\n${output}`));
      });
    });
    this.child.removeAllListeners("exit");
  }

  /// SIGTERM, then wait for the process to drain and exit.
  async stop() {
    if (!this.child) return;
    const child = this.child;
    this.child = null;
    const exited = new Promise((res) => child.on("exit", res));
    child.kill("SIGTERM");
    const code = await exited;
    if (code !== 0) throw new Error(`sidechat exited with ${code} after SIGTERM`);
  }

  async cleanup() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async api(method, path, body) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }
}
