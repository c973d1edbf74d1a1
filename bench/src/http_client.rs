//! The REST path's load generator: keep-alive HTTP/1.1 connections driven directly, one write
//! per request and the response read by its `Content-Length`, as `wrk` does.
//!
//! It stands in for browsers on other machines, yet here it shares two cores with the gateway
//! and the database, so every microsecond it spends is taken from the system measured. A
//! general client (reqwest) spent a quarter of the harness's CPU on the REST path: a task and a
//! channel per connection, URL parsing, redirect and retry layers. This one has none of that;
//! it refuses what it does not need (chunked bodies, informational responses) with an error.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of a response head.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers of a response.
const MAX_HEADERS: usize = 32;
/// Most bytes of a response body (a list page of 100 records of 1 KiB is ~150 KiB).
const MAX_BODY_BYTES: usize = 64 << 20;

/// A response: its status and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, exactly `Content-Length` bytes.
    pub body: Vec<u8>,
}

/// Keep-alive connections to one server, reused by whichever worker is free.
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    idle: Mutex<Vec<Connection>>,
}

impl HttpClient {
    /// A client of the server at `addr`; connections open on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `method path` with `headers` (`name: value` lines without line ends) and `body`,
    /// and reads the response. The connection is reused unless the request failed or the server
    /// said it would close it. An idle connection the server had closed before this request
    /// (no byte of a response came back) is replaced by a new one, once. `HEAD` is not
    /// supported (its response has a length and no body).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> anyhow::Result<Response> {
        ensure!(method != "HEAD", "HEAD is not supported");
        let idle = self.idle.lock().expect("idle connections").pop();
        let (mut connection, reused) = match idle {
            Some(connection) => (connection, true),
            None => (Connection::open(self.addr).await?, false),
        };
        let mut exchange = connection.exchange(method, path, headers, body).await?;
        if reused && matches!(exchange, Exchange::Closed) {
            connection = Connection::open(self.addr).await?;
            exchange = connection.exchange(method, path, headers, body).await?;
        }
        let Exchange::Answered(response, keep_alive) = exchange else {
            bail!("the server closed a new connection unanswered");
        };
        if keep_alive {
            self.idle.lock().expect("idle connections").push(connection);
        }
        Ok(response)
    }
}

/// How an exchange ended.
enum Exchange {
    /// The response, and whether the connection may carry another request.
    Answered(Response, bool),
    /// The server had closed the connection: the request was not answered at all.
    Closed,
}

/// One keep-alive connection and its buffers, reused from one request to the next.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    /// The request being written.
    out: Vec<u8>,
    /// The bytes of the response being read; emptied when the next exchange starts.
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            out: Vec::with_capacity(1024),
            buf: Vec::with_capacity(8 * 1024),
        })
    }

    /// Writes the request in one write and reads the whole response.
    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> anyhow::Result<Exchange> {
        let request = &mut self.out;
        request.clear();
        write!(request, "{method} {path} HTTP/1.1\r\nhost: bench\r\n")?;
        for header in headers {
            request.extend_from_slice(header.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || method == "PUT" || method == "POST" {
            write!(request, "content-length: {}\r\n", body.len())?;
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        self.buf.clear();
        match self.stream.write_all(&self.out).await {
            Ok(()) => {}
            // A peer that closed an idle connection may reset it before the write completes.
            Err(e) if is_closed(&e) => return Ok(Exchange::Closed),
            Err(e) => return Err(e.into()),
        }
        let (head_len, head) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            ensure!(
                self.buf.len() < MAX_HEAD_BYTES,
                "response head longer than {MAX_HEAD_BYTES} bytes"
            );
            if !self.fill().await? {
                return Ok(Exchange::Closed);
            }
        };
        ensure!(
            head.content_length <= MAX_BODY_BYTES,
            "response body of {} bytes is over {MAX_BODY_BYTES}",
            head.content_length
        );
        let end = head_len + head.content_length;
        while self.buf.len() < end {
            ensure!(
                self.fill().await?,
                "the server closed the connection mid-response"
            );
        }
        ensure!(
            self.buf.len() == end,
            "{} bytes after the response: the server answered more than asked",
            self.buf.len() - end
        );
        let body = self.buf[head_len..end].to_vec();
        let response = Response {
            status: head.status,
            body,
        };
        Ok(Exchange::Answered(response, !head.close))
    }

    /// Reads more bytes into the buffer: `false` when the server closed (or reset) the
    /// connection before any byte of a response, an error when it closed mid-response.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.buf.reserve(8 * 1024);
        let read = match self.stream.read_buf(&mut self.buf).await {
            Ok(read) => read,
            Err(e) if is_closed(&e) => 0,
            Err(e) => return Err(e.into()),
        };
        if read == 0 {
            ensure!(
                self.buf.is_empty(),
                "the server closed the connection mid-response"
            );
            return Ok(false);
        }
        Ok(true)
    }
}

/// Whether `error` says the peer closed or reset the connection.
fn is_closed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(
        error.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted
    )
}

/// What the client needs from a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: usize,
    /// The server will close the connection after this response.
    close: bool,
}

/// Parses a response head from the start of `buf`: `None` while it is incomplete, otherwise
/// its length in bytes and what it says.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(usize, Head)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).context("malformed response head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("response without status")?;
    ensure!(
        status >= 200,
        "informational response {status} is not supported"
    );
    let mut content_length = None;
    let mut close = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .context("content-length is not a number")?;
            ensure!(
                content_length.is_none_or(|known| known == value),
                "conflicting content-length headers"
            );
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("transfer-encoding is not supported: the gateway sends whole bodies");
        } else if header.name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    // A 204 or 304 has no body, whatever its length header says (RFC 9112, 6.3).
    let content_length = match (status, content_length) {
        (204 | 304, _) => 0,
        (_, Some(length)) => length,
        (_, None) => bail!("response {status} without content-length"),
    };
    Ok(Some((
        len,
        Head {
            status,
            content_length,
            close,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn head_is_incomplete_until_its_blank_line() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n")
                .unwrap()
                .is_none()
        );
        let (len, head) = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!(len, 38);
        assert_eq!(
            head,
            Head {
                status: 200,
                content_length: 2,
                close: false
            }
        );
    }

    #[test]
    fn heads_the_client_cannot_follow_are_errors() {
        for (head, expected) in [
            (&b"HTTP/1.1 200 OK\r\n\r\n"[..], "without content-length"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                "transfer-encoding",
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", "informational"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "conflicting",
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed"),
        ] {
            let error = parse_head(head).unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
    }

    #[test]
    fn no_content_has_no_body_and_close_is_seen() {
        let (_, head) = parse_head(
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, Close\r\ncontent-length: 5\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap()
                .unwrap();
        assert_eq!(
            head,
            Head {
                status: 204,
                content_length: 0,
                close: true
            }
        );
    }

    /// A server accepting one connection after another: on the `i`th it answers each request
    /// with the next of `connections[i]`, written in pieces of `chunk` bytes, then closes it.
    /// Returns the requests it read, per connection.
    async fn canned_server(
        connections: Vec<Vec<&'static [u8]>>,
        chunk: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for responses in connections {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut read = Vec::new();
                for response in responses {
                    let mut request = Vec::new();
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut bytes = [0u8; 1024];
                        let n = stream.read(&mut bytes).await.unwrap();
                        request.extend_from_slice(&bytes[..n]);
                    }
                    read.push(String::from_utf8(request).unwrap());
                    for piece in response.chunks(chunk) {
                        stream.write_all(piece).await.unwrap();
                        stream.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
                requests.push(read);
            }
            requests
        });
        (addr, server)
    }

    /// `client.send` of a `GET /`, failing after 5 s (a server waiting for a connection the
    /// client did not open).
    async fn get(client: &HttpClient) -> anyhow::Result<Response> {
        let send = client.send("GET", "/", &[], b"");
        tokio::time::timeout(std::time::Duration::from_secs(5), send).await?
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    #[tokio::test]
    async fn responses_in_pieces_are_read_whole_on_one_connection() {
        let first = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world";
        let second = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let (addr, server) = canned_server(vec![vec![first, second]], 3).await;
        let client = HttpClient::new(addr);
        let response = client
            .send("GET", "/a", &["authorization: Bearer t"], b"")
            .await
            .unwrap();
        assert_eq!(
            (response.status, &response.body[..]),
            (200, &b"hello world"[..])
        );
        // The server accepts one connection: a second would never be answered.
        let second = client.send("PUT", "/b", &[], b"{}");
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .expect("the idle connection was reused")
            .unwrap();
        assert_eq!((response.status, response.body.len()), (404, 0));
        let requests = server.await.unwrap().remove(0);
        assert!(
            requests[0].starts_with("GET /a HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("authorization: Bearer t\r\n"));
        assert!(
            requests[1].contains("content-length: 2\r\n"),
            "{}",
            requests[1]
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused() {
        let closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        let (addr, server) = canned_server(vec![vec![closing], vec![OK]], 1024).await;
        let client = HttpClient::new(addr);
        assert_eq!(get(&client).await.unwrap().status, 200);
        assert!(client.idle.lock().unwrap().is_empty());
        assert_eq!(get(&client).await.unwrap().status, 200);
        assert_eq!(server.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_closed_unannounced_is_replaced_once() {
        // The first connection answers once and closes without saying so.
        let (addr, server) = canned_server(vec![vec![OK], vec![OK]], 1024).await;
        let client = HttpClient::new(addr);
        assert_eq!(get(&client).await.unwrap().body, b"ok");
        // Let the close arrive before the next request.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(get(&client).await.unwrap().body, b"ok");
        let requests = server.await.unwrap();
        assert_eq!((requests[0].len(), requests[1].len()), (1, 1));
        // A new connection closed unanswered is an error, not a loop.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = HttpClient::new(listener.local_addr().unwrap());
        let closer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        });
        let error = get(&client).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("closed a new connection"),
            "{error:#}"
        );
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_closing_mid_body_or_sending_extra_bytes_is_an_error() {
        let truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort";
        let extra = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA";
        let (addr, server) = canned_server(vec![vec![truncated], vec![extra]], 1024).await;
        let client = HttpClient::new(addr);
        let error = get(&client).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("closed the connection mid-response"),
            "{error:#}"
        );
        let error = get(&client).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("after the response"),
            "{error:#}"
        );
        // Failed connections are not reused.
        assert!(client.idle.lock().unwrap().is_empty());
        server.await.unwrap();
    }
}
