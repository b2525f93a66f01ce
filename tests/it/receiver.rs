//! A local HTTP endpoint standing in for a host's webhook URL or a push service: it
//! records every request and answers with the status a test chooses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::helpers::WAIT;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

type Answer = Box<dyn FnMut(&Received) -> u16 + Send>;

pub struct Receiver {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    requests: mpsc::UnboundedReceiver<Received>,
    answer: Arc<Mutex<Answer>>,
}

impl Receiver {
    /// Listens on a free port; answers 200 until told otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, requests) = mpsc::unbounded_channel();
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Box::new(|_| 200)));
        let answer_for_server = answer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, answer) = (tx.clone(), answer_for_server.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    // Keep-alive: clients reuse the connection for the next request.
                    while let Some(request) = read_request(&mut read).await {
                        let status = (answer.lock().unwrap())(&request);
                        let _ = tx.send(request);
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
                        );
                        if write.write_all(head.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Receiver {
            base,
            requests,
            answer,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// From now on, answer each request with what `answer` says.
    pub fn answer_with(&self, answer: impl FnMut(&Received) -> u16 + Send + 'static) {
        *self.answer.lock().unwrap() = Box::new(answer);
    }

    /// The next request, within the test wait.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a request arrives in time")
            .expect("the receiver runs")
    }

    /// Requests that arrived and were not yet taken.
    pub fn pending(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }
}

async fn read_request(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Received> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        read.read_line(&mut header).await.ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(Received {
        path,
        headers,
        body,
    })
}
