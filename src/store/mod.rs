//! The store: bootlace's layout ([`layout`]) over any object store the `object_store`
//! crate speaks, with the two guarantees releases rest on — create-only writes
//! (`If-None-Match: *`) and compare-and-swap (`If-Match`) — and a clear error where a
//! store cannot give them.

mod http;
pub mod layout;
mod local;
mod open;
pub mod reader;
mod role;
mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, UpdateVersion};
use serde::Deserialize;

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

    /// On a `file://` store: refuses to read a key that is there but is not a regular
    /// file (a FIFO planted in the store would hold the read, and the state dir's lock,
    /// for ever; a device would never end).
    fn regular(&self, key: &str) -> Result<(), StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        match std::fs::metadata(root.join(key)) {
            Ok(meta) if !meta.is_file() => Err(StoreError {
                refused: true,
                action: "reading",
                url: self.url_of(key),
                reason: "not a regular file; not read".into(),
            }),
            _ => Ok(()),
        }
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
        self.regular(key)?;
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
        match self.open_stream(key, from).await? {
            Some((_, stream)) => Ok(stream),
            None => Err(StoreError {
                refused: false,
                action: "reading",
                url: self.url_of(key),
                reason: "not found".into(),
            }),
        }
    }

    /// As [`Store::get_stream`], but `None` when there is no object at `key`, and with
    /// the object's whole size (as the server gives it: a bound to check, not to trust).
    pub async fn open_stream(
        &self,
        key: &str,
        from: Option<u64>,
    ) -> Result<
        Option<(
            u64,
            futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
        )>,
        StoreError,
    > {
        use futures::StreamExt;
        self.regular(key)?;
        let options = object_store::GetOptions {
            range: from.map(object_store::GetRange::Offset),
            ..Default::default()
        };
        let result = match self.objects.get_opts(&self.path(key), options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(self.error("reading", key, &err)),
        };
        let url = self.url_of(key);
        let size = result.meta.size;
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
        Ok(Some((size, stream)))
    }

    /// Bytes `range` of the object at `key`, as the chunks they arrived in (no copy
    /// into one buffer). A server that answers a range request with the whole object
    /// gives [`RangeAnswer::Ignored`].
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<RangeAnswer, StoreError> {
        self.regular(key)?;
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
        self.regular(key)?;
        match self.objects.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.error("checking", key, &err)),
        }
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
        self.regular(key)?;
        match self.objects.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(system_time(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.error("checking", key, &err)),
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
