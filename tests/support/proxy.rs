//! A fault-injecting HTTP proxy on loopback, between bootlace and a real S3 server.
//! It relays requests as they are, and spoils the answers to the requests whose path
//! contains `matching`, the first `times` of them: a reset mid-body, a stall, a
//! trickle, a truncated body, a lying `Content-Length`, a 503 instead of an answer, or
//! another server's status for the same answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The head and `after` bytes of the body, then a TCP reset.
    Reset { after: usize },
    /// The head and `after` bytes of the body, then nothing, the connection held open.
    Stall { after: usize },
    /// The body in pieces of `bytes`, one every `every`.
    Trickle { bytes: usize, every: Duration },
    /// A trickle as above for `after` bytes, then a TCP reset.
    TrickleThenReset {
        bytes: usize,
        every: Duration,
        after: usize,
    },
    /// The head and `after` bytes of the body, then a clean close (FIN).
    Truncate { after: usize },
    /// The head says `Content-Length: length`; the real body follows, then a close.
    LieLength { length: u64 },
    /// `503 Slow Down`, without asking the server.
    Unavailable,
    /// `400` with an AWS JSON `ThrottlingException`, as SSM and Secrets Manager answer
    /// a caller over its rate, without asking the server.
    Throttle,
    /// The server's answer, its status `from` changed to `to` (and counted in
    /// `rewritten`); other answers pass.
    Status { from: u16, to: u16 },
}

pub struct Proxy {
    pub endpoint: String,
    /// Requests whose answers were spoiled so far.
    pub spoiled: Arc<AtomicUsize>,
    /// Requests relayed in all.
    pub requests: Arc<AtomicUsize>,
    /// Answers `304 Not Modified` relayed.
    pub not_modified: Arc<AtomicUsize>,
    /// Answers whose status `Fault::Status` changed.
    pub rewritten: Arc<AtomicUsize>,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port`) spoiling the first `times` answers to
    /// paths containing `matching` with `fault`.
    pub fn start(upstream: &str, matching: &str, fault: Fault, times: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let spoiled = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let rewritten = Arc::new(AtomicUsize::new(0));
        let rule = Arc::new(Rule {
            not_modified: not_modified.clone(),
            rewritten: rewritten.clone(),
            matching: matching.to_owned(),
            fault,
            times,
            spoiled: spoiled.clone(),
            requests: requests.clone(),
        });
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (rule, upstream) = (rule.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &upstream, &rule);
                });
            }
        });
        Self {
            endpoint,
            spoiled,
            requests,
            not_modified,
            rewritten,
        }
    }
}

struct Rule {
    matching: String,
    fault: Fault,
    times: usize,
    spoiled: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    rewritten: Arc<AtomicUsize>,
}

impl Rule {
    /// The fault for a request to `path`, counting it, or `None` to relay it intact.
    fn fault_for(&self, path: &str) -> Option<Fault> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if !path.contains(&self.matching) {
            return None;
        }
        let claimed = self
            .spoiled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.times).then_some(n + 1)
            });
        claimed.is_ok().then_some(self.fault)
    }
}

/// One client connection: request by request, each relayed on one upstream connection.
fn relay(client: TcpStream, upstream: &str, rule: &Rule) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let server = TcpStream::connect(upstream)?;
    let mut from_server = BufReader::new(server.try_clone()?);
    let mut to_server = server;
    loop {
        let Some((head, length)) = read_head(&mut from_client)? else {
            return Ok(());
        };
        let body = read_body(&mut from_client, &head, length)?;
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let fault = rule.fault_for(&path);
        if let Some(Fault::Unavailable) = fault {
            let answer = "HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n";
            to_client.write_all(answer.as_bytes())?;
            continue;
        }
        if let Some(Fault::Throttle) = fault {
            let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            to_client.write_all(answer.as_bytes())?;
            continue;
        }
        to_server.write_all(head.as_bytes())?;
        to_server.write_all(&body)?;
        let Some((answer, length)) = read_head(&mut from_server)? else {
            return Ok(());
        };
        if answer.starts_with("HTTP/1.1 304") {
            rule.not_modified.fetch_add(1, Ordering::SeqCst);
        }
        let body = read_body(&mut from_server, &answer, length)?;
        let head_only = head.starts_with("HEAD ");
        match fault {
            Some(Fault::Status { from, to }) => {
                let status = format!("HTTP/1.1 {from} ");
                let answer = match answer.strip_prefix(&status) {
                    Some(rest) => {
                        rule.rewritten.fetch_add(1, Ordering::SeqCst);
                        let headers = rest.split_once("\r\n").map_or("", |(_, after)| after);
                        format!("HTTP/1.1 {to} Rewritten\r\n{headers}")
                    }
                    None => answer,
                };
                to_client.write_all(answer.as_bytes())?;
                to_client.write_all(&body)?;
            }
            None | Some(Fault::Unavailable | Fault::Throttle) => {
                to_client.write_all(answer.as_bytes())?;
                to_client.write_all(&body)?;
            }
            Some(fault) if head_only => {
                // A HEAD has no body to spoil; its answer passes.
                let _ = fault;
                to_client.write_all(answer.as_bytes())?;
            }
            Some(fault) => return spoil(fault, &answer, &body, to_client),
        }
    }
}

fn spoil(fault: Fault, head: &str, body: &[u8], mut client: TcpStream) -> std::io::Result<()> {
    let cut = |after: usize| after.min(body.len());
    match fault {
        Fault::Reset { after } => {
            client.write_all(head.as_bytes())?;
            client.write_all(&body[..cut(after)])?;
            client.flush()?;
            super::reset(&client);
        }
        Fault::Stall { after } => {
            client.write_all(head.as_bytes())?;
            client.write_all(&body[..cut(after)])?;
            client.flush()?;
            // Hold the connection open until the client gives up on it.
            let mut sink = [0u8; 1];
            client.set_read_timeout(Some(Duration::from_secs(300)))?;
            let _ = client.read(&mut sink);
        }
        Fault::Trickle { bytes, every } => {
            client.write_all(head.as_bytes())?;
            for piece in body.chunks(bytes.max(1)) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(every);
            }
        }
        Fault::TrickleThenReset { bytes, every, after } => {
            client.write_all(head.as_bytes())?;
            for piece in body[..cut(after)].chunks(bytes.max(1)) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(every);
            }
            super::reset(&client);
        }
        Fault::Truncate { after } => {
            client.write_all(head.as_bytes())?;
            client.write_all(&body[..cut(after)])?;
            client.shutdown(std::net::Shutdown::Both)?;
        }
        Fault::LieLength { length } => {
            let lied: String = head
                .split("\r\n")
                .map(
                    |line| match line.to_ascii_lowercase().starts_with("content-length:") {
                        true => format!("Content-Length: {length}"),
                        false => line.to_owned(),
                    },
                )
                .collect::<Vec<_>>()
                .join("\r\n");
            client.write_all(lied.as_bytes())?;
            client.write_all(body)?;
            client.shutdown(std::net::Shutdown::Both)?;
        }
        Fault::Unavailable | Fault::Throttle | Fault::Status { .. } => {
            unreachable!("not a spoiled answer")
        }
    }
    Ok(())
}

/// The body after `head`, as it came: `length` bytes, or chunks through the last one,
/// framing kept, when it is `Transfer-Encoding: chunked`.
fn read_body(reader: &mut impl BufRead, head: &str, length: usize) -> std::io::Result<Vec<u8>> {
    if !head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked\r\n")
    {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        body.extend_from_slice(line.as_bytes());
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // The chunk and its CRLF; after the last (empty) chunk, the final CRLF.
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        if size == 0 {
            return Ok(body);
        }
    }
}

/// An HTTP head (through the blank line) and its `Content-Length` (0 when absent);
/// `None` at a clean end of the connection.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<(String, usize)>> {
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Ok(Some((head, length)));
        }
    }
}
