// The official `phoenix` client in Node: it only needs a WebSocket implementation.
import { Socket, Presence } from "phoenix";
import WebSocket from "ws";

export { Presence };

export function connect(server, token, options = {}) {
  const socket = new Socket(`${server.ws}/socket`, {
    params: { token },
    transport: WebSocket,
    reconnectAfterMs: () => 200,
    rejoinAfterMs: () => 200,
    ...options,
  });
  socket.connect();
  return socket;
}

/// Joins and resolves with the reply, or rejects with the error reason.
export function join(channel) {
  return new Promise((res, rej) => {
    channel
      .join()
      .receive("ok", res)
      .receive("error", (e) => rej(new Error(`join ${channel.topic} refused: ${e.reason}`)))
      .receive("timeout", () => rej(new Error(`join ${channel.topic} timed out`)));
  });
}

export function push(channel, event, payload) {
  return new Promise((res, rej) => {
    channel
      .push(event, payload)
      .receive("ok", res)
      .receive("error", (e) => rej(Object.assign(new Error(`${event} refused: ${e.reason}`), { reason: e.reason })))
      .receive("timeout", () => rej(new Error(`${event} timed out`)));
  });
}

/// Resolves with the next `event` on `channel` whose payload passes `filter`.
export function next(channel, event, filter = () => true, ms = 10_000) {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => {
      channel.off(event, ref);
      rej(new Error(`no ${event} on ${channel.topic} within ${ms} ms`));
    }, ms);
    const ref = channel.on(event, (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      channel.off(event, ref);
      res(payload);
    });
  });
}
