//! Writing to the store: whole objects (reports), conditional creates and
//! compare-and-swaps (manifests, pointers), deletes, and archives streamed up in parts,
//! refused whole if their bytes are not the ones declared. Checking that the store
//! honours conditional writes before relying on them.

use std::path::Path;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::{Guard, Store, StoreError, Versioned, local};

/// Archives are uploaded in parts of this size, a few at a time: memory stays near
/// `PART_SIZE * UPLOAD_CONCURRENCY` whatever the archive's size.
const PART_SIZE: usize = 8 << 20;
const UPLOAD_CONCURRENCY: usize = 4;
/// What a compare-and-swap reads back to compare: swapped objects are pointers, far
/// smaller than this.
const SWAP_READ_CAP: u64 = 1 << 20;

impl Store {
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
}
