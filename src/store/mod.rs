//! The store: bootlace's layout ([`layout`]) over any object store the `object_store`
//! crate speaks, with the two guarantees releases rest on — create-only writes
//! (`If-None-Match: *`) and compare-and-swap (`If-Match`) — and a clear error where a
//! store cannot give them.

mod http;
pub mod layout;
mod local;
mod open;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tracing::{debug, warn};

pub use open::{Access, aws_credentials, describe, open};

/// `[store]`: where the store is and how it is talked to.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `""` is the same as unset, so that the packaged config's defaults read as such.
    #[serde(deserialize_with = "crate::units::empty_as_none")]
    pub url: Option<String>,
    #[serde(deserialize_with = "crate::units::empty_as_none")]
    pub endpoint: Option<String>,
    #[serde(deserialize_with = "crate::units::empty_as_none")]
    pub region: Option<String>,
    #[serde(with = "crate::units::duration")]
    pub deadline: Duration,
    /// How long a store call may go without a byte before it is retried.
    #[serde(with = "crate::units::duration")]
    pub idle_timeout: Duration,
    /// Refuse S3-compatible servers that ignore `If-None-Match`/`If-Match`.
    pub require_conditional_writes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: None,
            deadline: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10),
            require_conditional_writes: true,
        }
    }
}

/// Archives are uploaded in parts of this size, a few at a time: memory stays near
/// `PART_SIZE * UPLOAD_CONCURRENCY` whatever the archive's size.
const PART_SIZE: usize = 8 << 20;
const UPLOAD_CONCURRENCY: usize = 4;
/// What a compare-and-swap reads back to compare: swapped objects are pointers, far
/// smaller than this.
const SWAP_READ_CAP: u64 = 1 << 20;

impl StoreError {
    /// Whether `err` comes from a store that did not answer (as opposed to one whose
    /// answer was refused, or no store failure at all).
    pub fn unanswered(err: &anyhow::Error) -> bool {
        err.chain()
            .any(|e| e.downcast_ref::<StoreError>().is_some_and(|e| !e.refused))
    }
}

/// A failed store call, naming the object: `reading s3://b/app/pointers/prod.json: access denied`.
#[derive(Debug, thiserror::Error)]
#[error("{action} {url}: {reason}")]
pub struct StoreError {
    /// The store answered, and what it sent was refused (an object over its size cap):
    /// the store itself is working.
    pub refused: bool,
    pub action: &'static str,
    pub url: String,
    pub reason: String,
}

/// An object's bytes and the version a compare-and-swap must name.
#[derive(Debug)]
pub struct Versioned {
    pub bytes: Bytes,
    pub version: UpdateVersion,
}

/// What a conditional GET came back with.
#[derive(Debug)]
pub enum Fetched {
    Object(Versioned),
    /// The object still has the ETag named.
    NotModified,
    Missing,
}

/// Bytes `range` of a local file, `FILE_BLOCK` at a time, each read on a blocking thread.
fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
    url: String,
) -> futures::stream::BoxStream<'static, Result<Bytes, StoreError>> {
    use futures::StreamExt;
    let file = std::sync::Arc::new(file);
    futures::stream::try_unfold(range.start, move |at| {
        let (file, url, end) = (file.clone(), url.clone(), range.end);
        async move {
            if at >= end {
                return Ok(None);
            }
            let len = (end - at).min(FILE_BLOCK);
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut block = vec![0u8; len as usize];
                file.read_exact_at(&mut block, at).map(|()| block)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match read {
                Ok(block) => Ok(Some((Bytes::from(block), at + len))),
                Err(e) => Err(StoreError {
                    refused: false,
                    action: "reading",
                    url,
                    reason: e.to_string(),
                }),
            }
        }
    })
    .boxed()
}

/// The reads of a local file's stream: large enough that a thread hop costs nothing
/// beside one, small enough to keep the unpacker's queue of chunks within a few MiB.
const FILE_BLOCK: u64 = 256 << 10;

/// An object's last-modified time as a `SystemTime` (S3 gives it to the second).
fn system_time(meta: &object_store::ObjectMeta) -> std::time::SystemTime {
    // Between 1970 and the end of 9999, the span RFC 3339 can write.
    let at = &meta.last_modified;
    let seconds = (at.timestamp().max(0) as u64).min(253_402_300_799);
    std::time::UNIX_EPOCH + std::time::Duration::new(seconds, at.timestamp_subsec_nanos().min(999_999_999))
}

/// One object as a listing names it.
#[derive(Debug)]
pub struct Listed {
    /// Relative to the store's prefix, like every key bootlace names.
    pub key: String,
    pub size: u64,
    /// When it was last written, by the store's clock.
    pub modified: std::time::SystemTime,
    /// Its name is not printable text (a control character, not UTF-8): `key` is made
    /// printable, and names no object that can be read.
    pub odd: bool,
}

/// What a ranged GET came back with.
#[derive(Debug)]
pub enum RangeAnswer {
    /// The range, in the chunks it arrived in.
    Bytes(Vec<Bytes>),
    /// The server sent the whole object (200) instead of the range.
    Ignored,
}

/// How conditional writes are guaranteed on this store.
#[derive(Debug)]
enum Guard {
    /// The server enforces `If-None-Match` and `If-Match` (S3, GCS, Azure).
    Server,
    /// The server may ignore preconditions (S3-compatible servers vary): probed once.
    Probe {
        required: bool,
        probed: tokio::sync::OnceCell<bool>,
    },
    /// A local directory: a lock file serialises every compare-and-swap.
    LockFile(PathBuf),
}

#[derive(Debug)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// The prefix as object_store encodes it, ending in `/` (or empty): listed
    /// locations start with it.
    prefix: String,
    prefix_path: ObjectPath,
    /// A `file://` store's directory: listed and deleted from without following links.
    local_root: Option<PathBuf>,
    /// Whether the store keeps object tags for IAM to match (S3).
    takes_tags: bool,
    /// `store.deadline`: how long a call may go on retrying.
    deadline: Duration,
    url: String,
    guard: Guard,
    /// Whether parallel ranged GETs are the fast way to read a large object here: yes
    /// over the network, where one connection is the bottleneck (and, on a loopback
    /// `rclone serve s3`, the server's cost per byte halves); no for local directories.
    pub prefers_ranges: bool,
}

impl Store {
    /// The URL of `key`, for messages.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long one call may go on retrying (`store.deadline`): the bound of a stream
    /// that keeps failing.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn path(&self, key: &str) -> ObjectPath {
        let key = ObjectPath::from(key);
        ObjectPath::from_iter(self.prefix_path.parts().chain(key.parts()))
    }

    /// On a `file://` store: refuses a key whose folders pass through a link (planted
    /// under `reports/`, say), so that nothing is written outside the store's folders.
    fn no_links(&self, action: &'static str, key: &str) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        local::check_folders(root, key).map_err(|e| self.io_error(action, key, e))
    }

    fn error(&self, action: &'static str, key: &str, err: &object_store::Error) -> StoreError {
        StoreError {
            refused: false,
            action,
            url: self.url_of(key),
            reason: open::describe(err),
        }
    }

    /// The object at `key`, or `None`. At most `cap` bytes are read: a larger object is
    /// an error, whatever the server says its size is, and nothing is allocated from
    /// a size the server announces.
    pub async fn get(&self, key: &str, cap: u64) -> Result<Option<Versioned>, StoreError> {
        match self.get_if_changed(key, None, cap).await? {
            Fetched::Object(object) => Ok(Some(object)),
            Fetched::Missing | Fetched::NotModified => Ok(None),
        }
    }

    /// As [`Store::get`], but conditional on the object's ETag no longer being `e_tag`
    /// (`If-None-Match`): an unchanged object costs one request and no body.
    pub async fn get_if_changed(
        &self,
        key: &str,
        e_tag: Option<&str>,
        cap: u64,
    ) -> Result<Fetched, StoreError> {
        use futures::StreamExt;
        let options = object_store::GetOptions {
            if_none_match: e_tag.map(str::to_owned),
            ..Default::default()
        };
        let result = match self.objects.get_opts(&self.path(key), options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(Fetched::Missing),
            Err(object_store::Error::NotModified { .. }) => return Ok(Fetched::NotModified),
            Err(err) => return Err(self.error("reading", key, &err)),
        };
        let too_large = |size: u64| StoreError {
            refused: true,
            action: "reading",
            url: self.url_of(key),
            reason: format!("{size} bytes or more, over the {cap}-byte limit for this object; not read"),
        };
        if result.meta.size > cap {
            return Err(too_large(result.meta.size));
        }
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        let mut bytes = bytes::BytesMut::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("reading", key, &e))?;
            let read = (bytes.len() + chunk.len()) as u64;
            if read > cap {
                return Err(too_large(read));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Object(Versioned {
            bytes: bytes.freeze(),
            version,
        }))
    }

    /// The object at `key` as a stream of chunks, in order.
    /// From byte `from` on when given (a resumed read).
    pub async fn get_stream(
        &self,
        key: &str,
        from: Option<u64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        use futures::StreamExt;
        let options = object_store::GetOptions {
            range: from.map(object_store::GetRange::Offset),
            ..Default::default()
        };
        let result = self
            .objects
            .get_opts(&self.path(key), options)
            .await
            .map_err(|e| self.error("reading", key, &e))?;
        let url = self.url_of(key);
        let stream = match result.payload {
            // object_store streams a local file 8 KiB at a time, each read a hop to a
            // blocking thread: 128,000 hops for a 1 GiB archive.
            object_store::GetResultPayload::File(file, _) => file_stream(file, result.range, url),
            object_store::GetResultPayload::Stream(stream) => stream
                .map(move |chunk| {
                    chunk.map_err(|e| StoreError {
                        refused: false,
                        action: "reading",
                        url: url.clone(),
                        reason: open::describe(&e),
                    })
                })
                .boxed(),
        };
        Ok(stream)
    }

    /// Bytes `range` of the object at `key`, as the chunks they arrived in (no copy
    /// into one buffer). A server that answers a range request with the whole object
    /// gives [`RangeAnswer::Ignored`].
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<RangeAnswer, StoreError> {
        let options = object_store::GetOptions {
            range: Some(range.into()),
            ..Default::default()
        };
        let result = match self.objects.get_opts(&self.path(key), options).await {
            Ok(result) => result,
            Err(err) if err.to_string().contains("non-partial response") => return Ok(RangeAnswer::Ignored),
            Err(err) => return Err(self.error("reading", key, &err)),
        };
        let chunks: Vec<Bytes> = result
            .into_stream()
            .try_collect()
            .await
            .map_err(|e| self.error("reading", key, &e))?;
        Ok(RangeAnswer::Bytes(chunks))
    }

    /// The size of the object at `key`, or `None` when there is none.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.objects.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.error("checking", key, &err)),
        }
    }

    /// Writes `bytes` at `key`, replacing what is there (reports, not releases).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.put_tagged(key, bytes, None).await
    }

    /// [`Store::put`] with one object tag (`x-amz-tagging`), for IAM to match: S3
    /// stores only; elsewhere (where `file://` and GCS would drop it silently) a tag is
    /// refused.
    pub async fn put_tagged(
        &self,
        key: &str,
        bytes: Bytes,
        tag: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        self.no_links("writing", key)?;
        let mut options = PutOptions::default();
        if let Some((name, value)) = tag {
            if !self.takes_tags {
                return Err(StoreError {
                    refused: true,
                    action: "writing",
                    url: self.url_of(key),
                    reason: format!("object tag {name} needs an s3:// store"),
                });
            }
            options.tags.push(name, value);
        }
        self.objects
            .put_opts(&self.path(key), PutPayload::from(bytes), options)
            .await
            .map(drop)
            .map_err(|e| self.error("writing", key, &e))
    }

    /// Keys directly under `dir` (a layout folder such as `builds/`).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        if self.local_root.is_some() {
            let listed: Vec<Listed> = self.list_all(dir).try_collect().await?;
            let mut keys: Vec<String> = listed.into_iter().filter(|l| !l.odd).map(|l| l.key).collect();
            keys.sort();
            return Ok(keys);
        }
        let prefix = self.path(dir);
        let metas: Vec<_> = self
            .objects
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.error("listing", dir, &e))?;
        let mut keys: Vec<String> = metas
            .iter()
            .filter_map(|meta| {
                meta.location
                    .as_ref()
                    .strip_prefix(&self.prefix)
                    .map(str::to_owned)
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Every object under `dir`, at any depth, as the store lists them: one request per
    /// page (1,000 keys on S3), nothing held beyond the page in hand.
    pub fn list_all(&self, dir: &str) -> futures::stream::BoxStream<'_, Result<Listed, StoreError>> {
        use futures::StreamExt;
        if let Some(root) = &self.local_root {
            return local::list(root, dir, self.url.clone());
        }
        let dir = dir.to_owned();
        self.objects
            .list(Some(&self.path(&dir)))
            .map(move |meta| match meta {
                Ok(meta) => Ok(Listed {
                    key: meta
                        .location
                        .as_ref()
                        .strip_prefix(&self.prefix)
                        .unwrap_or(meta.location.as_ref())
                        .to_owned(),
                    size: meta.size,
                    modified: system_time(&meta),
                    odd: false,
                }),
                Err(err) => Err(self.error("listing", &dir, &err)),
            })
            .boxed()
    }

    /// When the object at `key` was last written, by the store's clock; `None` when
    /// there is none.
    pub async fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>, StoreError> {
        match self.objects.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(system_time(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.error("checking", key, &err)),
        }
    }

    /// Deletes the object at `key`; one already gone is no error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(root) = &self.local_root {
            let (root, owned) = (root.clone(), key.to_owned());
            return tokio::task::spawn_blocking(move || local::delete(&root, &owned))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                .map_err(|e| self.io_error("deleting", key, e));
        }
        match self.objects.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.error("deleting", key, &err)),
        }
    }

    /// Writes `bytes` at `key` only if nothing is there. `Ok(false)` when something is.
    pub async fn create(&self, key: &str, bytes: Bytes) -> Result<bool, StoreError> {
        self.no_links("creating", key)?;
        if !self.enforces_preconditions().await? && self.size_of(key).await?.is_some() {
            return Ok(false);
        }
        let options = PutOptions::from(PutMode::Create);
        match self
            .objects
            .put_opts(&self.path(key), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Ok(false)
            }
            Err(err) => Err(self.error("creating", key, &err)),
        }
    }

    /// Compare-and-swap: writes `bytes` at `key` only if the object is still as it was
    /// read (`expected`), or still absent for `None`. `Ok(false)` when it changed.
    pub async fn swap(
        &self,
        key: &str,
        bytes: Bytes,
        expected: Option<&Versioned>,
    ) -> Result<bool, StoreError> {
        self.no_links("writing", key)?;
        let Some(expected) = expected else {
            return self.create(key, bytes).await;
        };
        if let Guard::LockFile(lock) = &self.guard {
            return self.swap_locked(lock, key, bytes, &expected.bytes).await;
        }
        let enforced = self.enforces_preconditions().await?;
        let options = PutOptions::from(PutMode::Update(expected.version.clone()));
        match self
            .objects
            .put_opts(&self.path(key), PutPayload::from(bytes.clone()), options)
            .await
        {
            Ok(_) if enforced => Ok(true),
            // Unguarded: at least notice when another writer got there in between.
            Ok(_) => Ok(self
                .get(key, SWAP_READ_CAP)
                .await?
                .is_some_and(|now| now.bytes == bytes)),
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                Ok(false)
            }
            Err(err) => Err(self.error("writing", key, &err)),
        }
    }

    /// A compare-and-swap on a local directory: under its lock file, the object's bytes
    /// must still be those read. (Its ETag, made of inode, mtime and size, can repeat.)
    async fn swap_locked(
        &self,
        lock: &Path,
        key: &str,
        bytes: Bytes,
        expected: &Bytes,
    ) -> Result<bool, StoreError> {
        let locking = |e: std::io::Error| StoreError {
            refused: false,
            action: "locking",
            url: lock.display().to_string(),
            reason: e.to_string(),
        };
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock)
            .map_err(locking)?;
        file.lock().map_err(locking)?;
        if self
            .get(key, SWAP_READ_CAP)
            .await?
            .is_none_or(|now| now.bytes != *expected)
        {
            return Ok(false);
        }
        self.objects
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("writing", key, &e))?;
        drop(file);
        Ok(true)
    }

    /// Fails early when the store cannot guard writes and the config requires it.
    pub async fn check_writes(&self) -> Result<(), StoreError> {
        self.enforces_preconditions().await.map(drop)
    }

    /// Whether the server enforces preconditions; probes once on stores that may not.
    async fn enforces_preconditions(&self) -> Result<bool, StoreError> {
        let Guard::Probe { required, probed } = &self.guard else {
            return Ok(true);
        };
        let enforced = *probed.get_or_try_init(|| self.probe()).await?;
        if !enforced && *required {
            return Err(StoreError {
                refused: false,
                action: "writing to",
                url: self.url.clone(),
                reason: "the server ignores conditional writes (If-None-Match or If-Match), so tags \
                         could be overwritten and pointer updates lost; set \
                         store.require_conditional_writes = false to use it anyway"
                    .into(),
            });
        }
        Ok(enforced)
    }

    /// Creates one probe object twice with `If-None-Match: *`, then overwrites it with an
    /// `If-Match` naming a version it never had: both must fail.
    async fn probe(&self) -> Result<bool, StoreError> {
        let key = format!(".bootlace-probe-{:016x}", fastrand::u64(..));
        let path = self.path(&key);
        let probing = |e: &object_store::Error| self.error("probing conditional writes at", &key, e);
        let put = |mode: PutMode| {
            self.objects
                .put_opts(&path, PutPayload::from_static(b"probe"), mode.into())
        };
        put(PutMode::Create).await.map_err(|e| probing(&e))?;
        let mut enforced = true;
        let bogus = UpdateVersion {
            e_tag: Some("\"bootlace-probe\"".into()),
            version: None,
        };
        for mode in [PutMode::Create, PutMode::Update(bogus)] {
            match put(mode).await {
                Ok(_) => enforced = false,
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                }
                Err(err) => return Err(probing(&err)),
            }
        }
        if let Err(err) = self.objects.delete(&path).await {
            debug!("leaving probe object {}: {err}", self.url_of(&key));
        }
        if !enforced {
            warn!(
                "{} ignores conditional writes: concurrent releases are not guarded",
                self.url
            );
        }
        Ok(enforced)
    }

    /// Streams the file at `file` to `key` in parts, reporting progress through
    /// `progress(bytes_sent)`. The bytes sent must have sha256 `expected`, or the upload
    /// is aborted before it completes: a content address never holds other content.
    pub async fn upload(
        &self,
        key: &str,
        file: &Path,
        expected: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<(), StoreError> {
        self.no_links("uploading", key)?;
        use sha2::Digest;
        let mut writer =
            object_store::buffered::BufWriter::with_capacity(self.objects.clone(), self.path(key), PART_SIZE)
                .with_max_concurrency(UPLOAD_CONCURRENCY);
        let local = |e: std::io::Error| StoreError {
            refused: false,
            action: "reading",
            url: file.display().to_string(),
            reason: e.to_string(),
        };
        let mut input = tokio::fs::File::open(file).await.map_err(local)?;
        let mut hasher = sha2::Sha256::new();
        let sent: Result<(), StoreError> = async {
            loop {
                let mut chunk = bytes::BytesMut::zeroed(1 << 20);
                let n = input.read(&mut chunk).await.map_err(local)?;
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                hasher.update(&chunk);
                writer
                    .put(chunk.freeze())
                    .await
                    .map_err(|e| self.error("uploading", key, &e))?;
                progress(n as u64);
            }
            if hex::encode(hasher.finalize()) != expected {
                return Err(local(std::io::Error::other(
                    "the file changed while it was uploaded",
                )));
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => writer
                .shutdown()
                .await
                .map_err(|e| self.io_error("uploading", key, e)),
            Err(err) => {
                // Not yet shut down, so abort cannot panic; it removes uploaded parts.
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }

    fn io_error(&self, action: &'static str, key: &str, err: std::io::Error) -> StoreError {
        let reason = match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<object_store::Error>())
        {
            Some(inner) => open::describe(inner),
            None => err.to_string(),
        };
        StoreError {
            refused: false,
            action,
            url: self.url_of(key),
            reason,
        }
    }
}
