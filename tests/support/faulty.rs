//! A faulty S3-like server on loopback: it answers GETs and HEADs for the objects it is
//! given (path-style, any bucket, no auth), except that one object's body is cut off
//! halfway with a TCP reset, every time it is asked for. It ignores Range headers: a
//! range request gets `200` and the whole object, with a `Content-Range` that says so.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Faulty {
    pub endpoint: String,
    /// How many times the faulty object was asked for.
    pub cut: Arc<AtomicUsize>,
}

impl Faulty {
    /// Serves `objects` (keys without the bucket); `faulty` is the key whose body breaks.
    pub fn start(objects: HashMap<String, Vec<u8>>, faulty: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        let objects = Arc::new(objects);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (objects, faulty, counter) = (objects.clone(), faulty.clone(), counter.clone());
                std::thread::spawn(move || serve(stream, &objects, &faulty, &counter));
            }
        });
        Self { endpoint, cut }
    }
}

fn serve(stream: TcpStream, objects: &HashMap<String, Vec<u8>>, faulty: &str, counter: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        // The headers are read and ignored, but for noting a Range header.
        let mut ranged = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            ranged |= line.to_ascii_lowercase().starts_with("range:");
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // Path-style: /bucket/key…
        let key = path
            .splitn(3, '/')
            .nth(2)
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("");
        let Some(body) = objects.get(key) else {
            let _ = writer.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let whole = match ranged {
            true => format!(
                "Content-Range: bytes 0-{}/{}\r\n",
                body.len().saturating_sub(1),
                body.len()
            ),
            false => String::new(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{whole}ETag: \"e\"\r\nLast-Modified: Wed, 25 Nov 2026 00:00:00 GMT\r\n\r\n",
            body.len()
        );
        let _ = writer.write_all(head.as_bytes());
        if method == "HEAD" {
            continue;
        }
        if key == faulty {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = writer.write_all(&body[..body.len() / 2]);
            let _ = writer.flush();
            super::reset(&writer);
            return;
        }
        let _ = writer.write_all(body);
    }
}
