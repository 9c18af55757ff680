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

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::unpack::{Options, Unpacked, unpack};
use serde::Deserialize;

use crate::release::Manifest;
use crate::store::reader::{Chunk, Incoming, QUEUE};
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

/// Where download progress is shown (a hidden bar when not on a terminal).
pub type Progress = indicatif::ProgressBar;

/// Downloads `manifest`'s archive into `staging`, verified: on success the staging dir
/// holds exactly the archive whose sha256 the manifest names.
pub async fn fetch_and_unpack(
    config: &super::Config,
    store: &Store,
    manifest: &Manifest,
    staging: &Path,
    progress: Progress,
) -> anyhow::Result<Unpacked> {
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
    let piped = pipe(
        config,
        store,
        &manifest.archive,
        manifest.size,
        None,
        progress,
        move |incoming| unpack(incoming, compression, &dest, options),
    )
    .await?;
    // The unpacker's error would only echo the download's.
    piped.sent?;
    let unpacked = piped
        .consumed
        .map_err(|e| anyhow::anyhow!("unpacking {}: {e}", store.url_of(&manifest.archive)))?;
    if piped.sha256 != manifest.sha256 || piped.size != manifest.size {
        anyhow::bail!(
            "{} is not the archive the manifest names: sha256 {} ({} bytes), expected {} ({} bytes)",
            store.url_of(&manifest.archive),
            piped.sha256,
            piped.size,
            manifest.sha256,
            manifest.size
        );
    }
    Ok(unpacked)
}

/// What [`pipe`] did: whether the bytes were all sent, what the consumer made of them,
/// and the sha256 and length of what was sent.
pub(super) struct Piped<T> {
    pub sent: anyhow::Result<()>,
    pub consumed: T,
    pub sha256: String,
    pub size: u64,
}

/// Streams the object at `key` (`size` bytes, or a stream already opened on it) into
/// `consume`, which runs on a blocking thread and reads the bytes in order as they
/// arrive: by one stream, or by parallel ranges when the store prefers them and the
/// object is large. Never more than `size` bytes are passed on.
pub(super) async fn pipe<T: Send + 'static>(
    config: &super::Config,
    store: &Store,
    key: &str,
    size: u64,
    opened: Option<Opened>,
    progress: Progress,
    consume: impl FnOnce(Incoming) -> T + Send + 'static,
) -> anyhow::Result<Piped<T>> {
    let ranges = match config.download {
        Download::Stream => false,
        Download::Ranges => true,
        Download::Auto => store.prefers_ranges,
    } && size > 2 * PART;
    let window = (config.download_window / PART).max(1) as usize;
    let (sender, receiver) = mpsc::channel::<Chunk>(QUEUE);
    let consumer = tokio::task::spawn_blocking(move || consume(Incoming::new(receiver)));
    progress.set_length(size);
    // Hashing here, on the download side, keeps it off the busier consuming thread.
    let mut outgoing = Outgoing {
        sender,
        hasher: Sha256::new(),
        size: 0,
        cap: size,
        progress: progress.clone(),
    };
    let sending = async {
        if ranges {
            send_ranges(store, key, size, window, store.deadline(), &mut outgoing).await
        } else {
            send_stream(store, key, opened, store.deadline(), &mut outgoing).await
        }
    };
    let sent = match tokio::time::timeout(config.timeout, sending).await {
        Ok(sent) => sent.map_err(|err| anyhow::Error::new(err).context("downloading")),
        Err(_) => Err(anyhow::anyhow!(
            "downloading {}: not finished after {} (deploy.timeout)",
            store.url_of(key),
            humantime::format_duration(config.timeout)
        )),
    };
    let Outgoing {
        sender, hasher, size, ..
    } = outgoing;
    drop(sender);
    let consumed = consumer.await.context("the unpacker stopped")?;
    progress.finish_and_clear();
    Ok(Piped {
        sent,
        consumed,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// A GET already answered: the stream of its body.
pub(super) type Opened = futures::stream::BoxStream<'static, Result<Bytes, StoreError>>;

/// The sending end: every chunk is hashed and counted on its way to the unpacker.
struct Outgoing {
    sender: mpsc::Sender<Chunk>,
    hasher: Sha256,
    size: u64,
    /// The most bytes passed on: what the object was said to hold.
    cap: u64,
    progress: Progress,
}

impl Outgoing {
    /// Passes a chunk on; `false` when the consumer has stopped (it says why), or when
    /// the object runs past its size (the hash then says so).
    async fn send(&mut self, chunk: Bytes) -> bool {
        let left = self.cap.saturating_sub(self.size);
        let over = chunk.len() as u64 > left;
        let passed = if over {
            chunk.slice(..left as usize)
        } else {
            chunk.clone()
        };
        self.hasher.update(&passed);
        self.size += passed.len() as u64;
        self.progress.inc(passed.len() as u64);
        let taken = passed.is_empty() || self.sender.send(Ok(passed)).await.is_ok();
        if over {
            // Counted, not passed on: the size then says the object is not the one named.
            self.size = self.size.saturating_add(chunk.len() as u64 - left);
            return false;
        }
        taken
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
    opened: Option<Opened>,
    resume_for: Duration,
    outgoing: &mut Outgoing,
) -> Result<(), StoreError> {
    let mut stream = match opened {
        Some(stream) => stream,
        None => store.get_stream(key, None).await?,
    };
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
            return send_stream(store, key, None, resume_for, outgoing).await;
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
