//! A small Phoenix V2 client: just what the scenarios need, over real sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

const REPLY_WAIT: Duration = Duration::from_secs(60);

/// Connects from `source` (a loopback address of its own past ~25k sockets, each source
/// address having its own ephemeral ports).
pub async fn connect(address: &str, url: &str, source: Ipv4Addr) -> anyhow::Result<Ws> {
    let server: SocketAddr = address.parse().context("server address")?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    // tungstenite zeroes its read buffer's spare room before every read: at its default of
    // 128 KiB that was a fifth of this program's CPU, taken from the server's two cores.
    // The server's frames here are a few hundred bytes; larger ones still arrive whole.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

pub fn frame(join_ref: &str, msg_ref: &str, topic: &str, event: &str, payload: Value) -> Message {
    Message::Text(
        json!([join_ref, msg_ref, topic, event, payload])
            .to_string()
            .into(),
    )
}

/// The parts of a server frame the load scenarios look at, borrowed from its text, with
/// the payload left unparsed until asked for. Parsing every frame into a `Value` was
/// about a tenth of the generator's CPU, on the cores it shares with the server.
pub struct Frame<'a> {
    msg_ref: Option<&'a str>,
    event: &'a str,
    payload: &'a RawValue,
}

impl<'a> Frame<'a> {
    /// None for anything that is not a Phoenix V2 frame whose refs and event name have
    /// no escapes (the server's never do).
    pub fn read(message: &'a Message) -> Option<Frame<'a>> {
        let Message::Text(text) = message else {
            return None;
        };
        let (_join_ref, msg_ref, _topic, event, payload): (
            IgnoredAny,
            Option<&str>,
            IgnoredAny,
            &str,
            &RawValue,
        ) = serde_json::from_str(text).ok()?;
        Some(Frame {
            msg_ref,
            event,
            payload,
        })
    }

    /// The ref of the push this frame answers ("" if none).
    pub fn msg_ref(&self) -> &'a str {
        self.msg_ref.unwrap_or("")
    }

    pub fn event(&self) -> &'a str {
        self.event
    }

    /// The payload as `T`, borrowing from the frame where `T` does; None if it is not one.
    pub fn payload<T: Deserialize<'a>>(&self) -> Option<T> {
        serde_json::from_str(self.payload.get()).ok()
    }
}

/// Parses a server frame; None for anything that is not a JSON array.
pub fn parse(message: &Message) -> Option<Value> {
    match message {
        Message::Text(text) => serde_json::from_str::<Value>(text).ok(),
        _ => None,
    }
}

/// Joins `topic` and waits for the reply, dropping whatever else arrives meanwhile.
pub async fn join(
    ws: &mut Ws,
    topic: &str,
    payload: Value,
    join_ref: &str,
) -> anyhow::Result<Value> {
    request(ws, join_ref, join_ref, topic, "phx_join", payload).await
}

/// Pushes `event` and waits for its reply, dropping whatever else arrives meanwhile.
pub async fn request(
    ws: &mut Ws,
    join_ref: &str,
    msg_ref: &str,
    topic: &str,
    event: &str,
    payload: Value,
) -> anyhow::Result<Value> {
    ws.send(frame(join_ref, msg_ref, topic, event, payload))
        .await?;
    reply_to(ws, msg_ref).await
}

/// The socket URL of the server at `address` for `token`.
pub fn socket_url(address: &str, token: &str) -> String {
    format!("ws://{address}/socket/websocket?vsn=2.0.0&token={token}")
}

/// One HTTP/1.1 request on its own connection; returns the status and the body.
pub async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("an HTTP status")?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// Reads until the reply to `msg_ref`.
pub async fn reply_to(ws: &mut Ws, msg_ref: &str) -> anyhow::Result<Value> {
    let wait = async {
        while let Some(message) = ws.next().await {
            let Some(value) = parse(&message?) else {
                continue;
            };
            if value.get(1).and_then(Value::as_str) == Some(msg_ref) && value[3] == "phx_reply" {
                return Ok(value[4].clone());
            }
        }
        bail!("the socket closed before the reply")
    };
    tokio::time::timeout(REPLY_WAIT, wait)
        .await
        .context("no reply within 60 s")?
}

/// Asserts an `ok` reply and returns its response.
pub fn ok(reply: Value) -> anyhow::Result<Value> {
    if reply["status"] == "ok" {
        Ok(reply["response"].clone())
    } else {
        bail!("refused: {reply}")
    }
}
