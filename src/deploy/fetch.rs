//! The download half of the deploy pipeline. Bytes arrive in order, by one of two ways,
//! and flow through a bounded channel into the unpacker on a blocking thread:
//!
//! ```text
//! store ─ one GET stream ───────────────┐
//!       └ ranged GETs, a window at once ┴─► sha256 ─► channel ─► zstd/gzip ─► tar ─► policy ─► disk
//! ```
//!
//! Nothing is kept but the chunks in flight: no temporary copy of the archive, and
//! memory bounded by the window whatever the archive's size.

use std::io::{self, BufRead, Read};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::unpack::{Options, Unpacked, unpack};
use serde::Deserialize;

use crate::release::Manifest;
use crate::store::{RangeAnswer, Store, StoreError};

/// `deploy.download`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Download {
    /// Parallel ranges from network stores, one stream from local directories.
    #[default]
    Auto,
    Stream,
    Ranges,
}

/// Size of one ranged GET: large enough to amortise a request, small enough to keep
/// several in flight within the window.
const PART: u64 = 8 << 20;
/// Chunks queued for the unpacker; each is one read off a socket, a few hundred KiB
/// at most.
const QUEUE: usize = 64;

/// Where download progress is shown (a hidden bar when not on a terminal).
pub type Progress = indicatif::ProgressBar;

type Chunk = Result<Bytes, StoreError>;

/// Downloads `manifest`'s archive into `staging`, verified: on success the staging dir
/// holds exactly the archive whose sha256 the manifest names.
pub async fn fetch_and_unpack(
    config: &super::Config,
    store: &Store,
    manifest: &Manifest,
    staging: &Path,
    progress: Progress,
) -> anyhow::Result<Unpacked> {
    let ranges = match config.download {
        Download::Stream => false,
        Download::Ranges => true,
        Download::Auto => store.prefers_ranges,
    } && manifest.size > 2 * PART;
    let window = (config.download_window / PART).max(1) as usize;
    let (sender, receiver) = mpsc::channel::<Chunk>(QUEUE);
    let (compression, dest) = (manifest.compression, staging.to_owned());
    // Never more than the manifest declared: a release that lies about its size is
    // stopped at the lie, not at a full disk.
    let mut limits = config.limits();
    limits.max_unpacked_bytes = limits.max_unpacked_bytes.min(manifest.unpacked_bytes);
    let options = Options {
        limits,
        sync: config.sync,
        progress: progress.clone(),
    };
    let unpacker =
        tokio::task::spawn_blocking(move || unpack(Incoming::new(receiver), compression, &dest, options));
    progress.set_length(manifest.size);
    // Hashing here, on the download side, keeps it off the busier unpacking thread.
    let mut outgoing = Outgoing {
        sender,
        hasher: Sha256::new(),
        size: 0,
        progress: progress.clone(),
    };
    let sending = async {
        if ranges {
            send_ranges(
                store,
                &manifest.archive,
                manifest.size,
                window,
                store.deadline(),
                &mut outgoing,
            )
            .await
        } else {
            send_stream(store, &manifest.archive, store.deadline(), &mut outgoing).await
        }
    };
    let sent = match tokio::time::timeout(config.timeout, sending).await {
        Ok(sent) => sent.map_err(|err| anyhow::Error::new(err).context("downloading")),
        Err(_) => Err(anyhow::anyhow!(
            "downloading {}: not finished after {} (deploy.timeout)",
            store.url_of(&manifest.archive),
            humantime::format_duration(config.timeout)
        )),
    };
    let Outgoing {
        sender, hasher, size, ..
    } = outgoing;
    drop(sender);
    let unpacked = unpacker.await.context("the unpacker stopped")?;
    progress.finish_and_clear();
    // The unpacker's error would only echo this one.
    sent?;
    let unpacked =
        unpacked.map_err(|e| anyhow::anyhow!("unpacking {}: {e}", store.url_of(&manifest.archive)))?;
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != manifest.sha256 || size != manifest.size {
        anyhow::bail!(
            "{} is not the archive the manifest names: sha256 {sha256} ({size} bytes), expected {} ({} bytes)",
            store.url_of(&manifest.archive),
            manifest.sha256,
            manifest.size
        );
    }
    Ok(unpacked)
}

/// The sending end: every chunk is hashed and counted on its way to the unpacker.
struct Outgoing {
    sender: mpsc::Sender<Chunk>,
    hasher: Sha256,
    size: u64,
    progress: Progress,
}

impl Outgoing {
    /// Passes a chunk on; `false` when the unpacker has stopped (it says why).
    async fn send(&mut self, chunk: Bytes) -> bool {
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        self.progress.inc(chunk.len() as u64);
        self.sender.send(Ok(chunk)).await.is_ok()
    }

    async fn send_all(&mut self, chunks: Vec<Bytes>) -> bool {
        for chunk in chunks {
            if !self.send(chunk).await {
                return false;
            }
        }
        true
    }
}

/// One GET, its chunks passed on as they come. A stream that breaks after making
/// progress is resumed where it stopped, by a GET of the rest, for as long as it keeps
/// making progress: only `resume_for` without a byte ends it. (The store client's own
/// retries stop `store.deadline` after the request started, which a long download
/// outlasts.) Whatever arrives is still checked against the manifest's sha256.
async fn send_stream(
    store: &Store,
    key: &str,
    resume_for: Duration,
    outgoing: &mut Outgoing,
) -> Result<(), StoreError> {
    let mut stream = store.get_stream(key, None).await?;
    let mut progress_at = Instant::now();
    let mut breaks = 0u32;
    loop {
        match stream.next().await {
            None => return Ok(()),
            Some(Ok(chunk)) => {
                progress_at = Instant::now();
                breaks = 0;
                if !outgoing.send(chunk).await {
                    return Ok(());
                }
            }
            Some(Err(err)) if outgoing.size == 0 || progress_at.elapsed() > resume_for => return Err(err),
            Some(Err(err)) => {
                breaks += 1;
                let pause = Duration::from_millis(100 << breaks.min(6)).min(resume_for);
                tracing::info!("{err}; resuming at byte {} in {pause:?}", outgoing.size);
                tokio::time::sleep(pause).await;
                stream = store.get_stream(key, Some(outgoing.size)).await?;
            }
        }
    }
}

/// Ranged GETs, `window` in flight, passed on in order. A server that answers the
/// first range with the whole object gets one stream instead.
async fn send_ranges(
    store: &Store,
    key: &str,
    size: u64,
    window: usize,
    resume_for: Duration,
    outgoing: &mut Outgoing,
) -> Result<(), StoreError> {
    let parts: Vec<Range<u64>> = (0..size)
        .step_by(PART as usize)
        .map(|start| start..(start + PART).min(size))
        .collect();
    let first = match store.get_range(key, parts[0].clone()).await? {
        RangeAnswer::Bytes(chunks) => chunks,
        RangeAnswer::Ignored => {
            tracing::info!(
                "{} answers ranges with the whole object; reading it as one stream",
                store.url()
            );
            return send_stream(store, key, resume_for, outgoing).await;
        }
    };
    if !outgoing.send_all(first).await {
        return Ok(());
    }
    let mut rest = futures::stream::iter(parts[1..].to_vec())
        .map(|range| store.get_range(key, range))
        .buffered(window);
    while let Some(answer) = rest.next().await {
        let chunks = match answer? {
            RangeAnswer::Bytes(chunks) => chunks,
            RangeAnswer::Ignored => {
                return Err(StoreError {
                    refused: false,
                    action: "reading",
                    url: store.url_of(key),
                    reason: "the server stopped answering range requests".into(),
                });
            }
        };
        if !outgoing.send_all(chunks).await {
            return Ok(());
        }
    }
    Ok(())
}

/// The receiving end of the channel, read in place: the decoder reads each chunk
/// where it arrived, with no copy into a buffer of its own.
struct Incoming {
    receiver: mpsc::Receiver<Chunk>,
    current: Bytes,
}

impl Incoming {
    fn new(receiver: mpsc::Receiver<Chunk>) -> Self {
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
