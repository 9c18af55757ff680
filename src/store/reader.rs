//! Reading an object's bytes on a blocking thread, as they arrive: the async side sends
//! each chunk into a bounded channel, and [`Incoming`] reads them in order.

use std::io::{self, BufRead, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use super::StoreError;

/// One chunk of an object, or why it stopped.
pub type Chunk = Result<Bytes, StoreError>;

/// Chunks queued for the reader; each is one read off a socket, a few hundred KiB at most.
pub const QUEUE: usize = 64;

/// The stream's chunks, sent into a channel by a task of their own: a reader for a
/// blocking thread (the task ends when the reader is dropped).
pub fn spawn_reader(mut stream: futures::stream::BoxStream<'static, Chunk>) -> Incoming {
    use futures::StreamExt;
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if sender.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    Incoming::new(receiver)
}

/// The receiving end of the channel, read in place: the decoder reads each chunk
/// where it arrived, with no copy into a buffer of its own.
pub struct Incoming {
    receiver: mpsc::Receiver<Chunk>,
    current: Bytes,
}

impl Incoming {
    pub fn new(receiver: mpsc::Receiver<Chunk>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl BufRead for Incoming {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(err)) => return Err(io::Error::other(err.to_string())),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount);
    }
}

impl Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
