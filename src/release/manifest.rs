//! The manifest (`builds/<tag>.json`, DESIGN §4): what a tag is. Created once with
//! `If-None-Match: *`, so a tag can never change.

use serde::{Deserialize, Serialize};

use crate::archive::Compression;
use crate::store::{Store, layout};

pub const FORMAT_VERSION: u32 = 1;

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
}

impl Manifest {
    /// Reads the manifest of `tag`; `None` when the store has no such tag.
    pub async fn load(store: &Store, tag: &str) -> anyhow::Result<Option<Manifest>> {
        let key = layout::manifest(tag);
        let Some(object) = store.get(&key).await? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&object.bytes)
            .map_err(|e| anyhow::anyhow!("reading manifest {}: {e}", store.url_of(&key)))?;
        if manifest.format_version != FORMAT_VERSION || manifest.tag != tag {
            anyhow::bail!(
                "reading manifest {}: format_version {} for tag {:?}; this bootlace reads version {FORMAT_VERSION}",
                store.url_of(&key),
                manifest.format_version,
                manifest.tag
            );
        }
        Ok(Some(manifest))
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
