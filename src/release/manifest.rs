//! The manifest (`builds/<tag>.json`, DESIGN §4): what a tag is. Created once with
//! `If-None-Match: *`, so a tag can never change.

use serde::{Deserialize, Serialize};

use super::check_sha256;
use crate::archive::Compression;
use crate::store::{Store, layout};

pub const FORMAT_VERSION: u32 = 1;
/// The most bytes of a manifest read (DESIGN §6.5): a larger one is refused unread.
pub const MAX_BYTES: u64 = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tag: String,
    /// The archive's key, relative to the store prefix.
    pub archive: String,
    pub compression: Compression,
    pub sha256: String,
    pub size: u64,
    pub files: u64,
    pub unpacked_bytes: u64,
    pub created_at: String,
    pub created_by: String,
    pub source_revision: Option<String>,
    /// The release's file index (DESIGN §6.9); absent in manifests pushed before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexRef>,
}

/// Where a release's file index is, and what it must hash to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    /// `blobs/sha256/<sha256>.index.json.zst`, relative to the store prefix.
    pub key: String,
    /// The sha256 of the index's canonical JSON.
    pub sha256: String,
    /// Bytes of the stored (compressed) index.
    pub size: u64,
}

impl Manifest {
    /// Reads the manifest of `tag`; `None` when the store has no such tag.
    pub async fn load(store: &Store, tag: &str) -> anyhow::Result<Option<Manifest>> {
        let key = layout::manifest(tag);
        let Some(object) = store.get(&key, MAX_BYTES).await? else {
            return Ok(None);
        };
        let manifest = Manifest::parse(&object.bytes, tag)
            .map_err(|why| anyhow::anyhow!("reading manifest {}: {why}", store.url_of(&key)))?;
        Ok(Some(manifest))
    }

    /// The manifest of `tag` from its bytes, checked: the format version, the tag it
    /// names, its digest, and that its archive is at the content address of that digest.
    pub fn parse(bytes: &[u8], tag: &str) -> Result<Manifest, String> {
        let mut manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // Free text, shown by `release list` and `show`: whoever could write the store
        // wrote it, so it is made printable (the bytes, and their signature, are not
        // touched).
        manifest.created_at = crate::text::printable(&manifest.created_at, 64);
        manifest.created_by = crate::text::printable(&manifest.created_by, 256);
        manifest.source_revision = manifest.source_revision.map(|r| crate::text::printable(&r, 256));
        if manifest.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {}; this bootlace reads version {FORMAT_VERSION}",
                manifest.format_version
            ));
        }
        if manifest.tag != tag {
            return Err(format!("it names tag {:?}, not {tag:?}", manifest.tag));
        }
        check_sha256(&manifest.sha256)?;
        let expected = layout::blob(&manifest.sha256, manifest.compression);
        if manifest.archive != expected {
            return Err(format!(
                "archive {:?} is not the content address of its sha256 ({expected})",
                manifest.archive
            ));
        }
        if let Some(index) = &manifest.index {
            check_sha256(&index.sha256).map_err(|why| format!("index: {why}"))?;
            let expected = layout::index_blob(&index.sha256);
            if index.key != expected {
                return Err(format!(
                    "index {:?} is not the content address of its sha256 ({expected})",
                    crate::text::printable(&index.key, 256)
                ));
            }
            if index.size > crate::archive::index::MAX_STORED_BYTES {
                return Err(format!(
                    "index of {} bytes, over the {}-byte limit",
                    index.size,
                    crate::archive::index::MAX_STORED_BYTES
                ));
            }
        }
        Ok(manifest)
    }

    /// Reads the manifest of `tag` and checks that its archive is in the store with the
    /// size the manifest names: what promote and rollback need before moving a pointer.
    pub async fn load_complete(store: &Store, tag: &str) -> anyhow::Result<Manifest> {
        let manifest = Self::load(store, tag).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "no release {tag} in {}: {} is missing",
                store.url(),
                layout::manifest(tag)
            )
        })?;
        match store.size_of(&manifest.archive).await? {
            Some(size) if size == manifest.size => Ok(manifest),
            Some(size) => anyhow::bail!(
                "release {tag} is damaged: {} is {size} bytes, the manifest says {}",
                store.url_of(&manifest.archive),
                manifest.size
            ),
            None => anyhow::bail!(
                "release {tag} is incomplete: {} is missing",
                store.url_of(&manifest.archive)
            ),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        bytes.push(b'\n');
        bytes
    }
}
