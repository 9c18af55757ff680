//! Pointers (`pointers/<name>.json`, DESIGN §4): which tag an environment runs. Every
//! change is a compare-and-swap on the object's version; a lost race re-reads and tries
//! again, a bounded number of times, so no update is ever silently lost.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::manifest::Manifest;
use super::{check_sha256, check_tag};
use crate::store::{Store, Versioned, layout};

pub const FORMAT_VERSION: u32 = 1;
/// The most bytes of a pointer object read (DESIGN §6.5): a larger one is refused unread.
pub const MAX_BYTES: u64 = 64 << 10;
/// Past states kept in `history`.
pub const HISTORY: usize = 20;
/// Compare-and-swap attempts before a pointer change gives up on a busy pointer.
const ATTEMPTS: u32 = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub format_version: u32,
    pub tag: String,
    pub sha256: String,
    pub size: u64,
    /// Increases by one at every change.
    pub serial: u64,
    pub updated_at: String,
    pub updated_by: String,
    /// The pointer's earlier states, newest first.
    pub history: Vec<HistoryEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub tag: String,
    pub serial: u64,
    pub updated_at: String,
}

/// What a pointer change did.
#[derive(Debug)]
pub struct Moved {
    pub pointer: Pointer,
    /// `false` when the pointer already named the tag and nothing was written.
    pub changed: bool,
    /// Lost races before the change went through.
    pub retries: u32,
}

/// What a conditional read of a pointer found.
#[derive(Debug)]
pub enum Checked {
    /// The pointer, and the ETag to name in the next check.
    Changed(Pointer, Option<String>),
    NotModified,
    Missing,
}

impl Pointer {
    /// Reads pointer `name` unless its ETag is still `e_tag`: an unchanged pointer
    /// costs one request and no body.
    pub async fn check(store: &Store, name: &str, e_tag: Option<&str>) -> anyhow::Result<Checked> {
        let key = layout::pointer(name);
        let object = match store.get_if_changed(&key, e_tag, MAX_BYTES).await? {
            crate::store::Fetched::Object(object) => object,
            crate::store::Fetched::NotModified => return Ok(Checked::NotModified),
            crate::store::Fetched::Missing => return Ok(Checked::Missing),
        };
        let pointer = Pointer::parse(&object.bytes)
            .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
        Ok(Checked::Changed(pointer, object.version.e_tag))
    }

    /// Reads pointer `name`; `None` when there is none yet.
    pub async fn load(store: &Store, name: &str) -> anyhow::Result<Option<Pointer>> {
        Ok(read(store, name).await?.map(|(pointer, _)| pointer))
    }

    /// The state that follows `self` (or nothing) when it moves to `manifest`.
    fn next(previous: Option<&Pointer>, manifest: &Manifest, now: &str, by: &str) -> Pointer {
        let (serial, history) = match previous {
            Some(p) => {
                let mut history = vec![HistoryEntry {
                    tag: p.tag.clone(),
                    serial: p.serial,
                    updated_at: p.updated_at.clone(),
                }];
                history.extend(p.history.iter().take(HISTORY - 1).cloned());
                (p.serial + 1, history)
            }
            None => (1, Vec::new()),
        };
        Pointer {
            format_version: FORMAT_VERSION,
            tag: manifest.tag.clone(),
            sha256: manifest.sha256.clone(),
            size: manifest.size,
            serial,
            updated_at: now.to_owned(),
            updated_by: by.to_owned(),
            history,
        }
    }

    fn to_json(&self) -> Bytes {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a pointer always serialises");
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

async fn read(store: &Store, name: &str) -> anyhow::Result<Option<(Pointer, Versioned)>> {
    let key = layout::pointer(name);
    let Some(object) = store.get(&key, MAX_BYTES).await? else {
        return Ok(None);
    };
    let pointer = Pointer::parse(&object.bytes)
        .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
    Ok(Some((pointer, object)))
}

impl Pointer {
    /// A pointer from its bytes, checked: its format version, and every tag and digest
    /// it names, with the rules the command line applies, before anything uses them.
    pub fn parse(bytes: &[u8]) -> Result<Pointer, String> {
        let pointer: Pointer = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if pointer.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {}; this bootlace reads version {FORMAT_VERSION}",
                pointer.format_version
            ));
        }
        check_tag(&pointer.tag).map_err(|e| e.0)?;
        check_sha256(&pointer.sha256)?;
        for entry in &pointer.history {
            check_tag(&entry.tag).map_err(|e| format!("history: {}", e.0))?;
        }
        Ok(pointer)
    }
}

/// Moves pointer `name` to the release that `choose` picks from its current state.
/// The choice is made once, on the first read: after a lost race the same release is
/// written over the state that won (or nothing, if that state already names it), so
/// two concurrent rollbacks cannot undo each other.
pub async fn move_pointer<F, Fut>(store: &Store, name: &str, by: &str, choose: F) -> anyhow::Result<Moved>
where
    F: FnOnce(Option<Pointer>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Manifest>>,
{
    let key = layout::pointer(name);
    let mut current = read(store, name).await?;
    let manifest = choose(current.as_ref().map(|(pointer, _)| pointer.clone())).await?;
    for attempt in 0..ATTEMPTS {
        let previous = current.as_ref().map(|(pointer, _)| pointer);
        if let Some(p) = previous.filter(|p| p.tag == manifest.tag && p.sha256 == manifest.sha256) {
            return Ok(Moved {
                pointer: p.clone(),
                changed: false,
                retries: attempt,
            });
        }
        let next = Pointer::next(previous, &manifest, &super::now(), by);
        if store
            .swap(&key, next.to_json(), current.as_ref().map(|(_, read)| read))
            .await?
        {
            return Ok(Moved {
                pointer: next,
                changed: true,
                retries: attempt,
            });
        }
        // Lost the race (or our own write landed and its answer was lost: the next
        // round then finds the pointer already at the tag and reports no change).
        debug!(
            "pointer {} changed under us (attempt {}); reading it again",
            store.url_of(&key),
            attempt + 1
        );
        tokio::time::sleep(Duration::from_millis(
            5 + fastrand::u64(..20 * u64::from(attempt + 1)),
        ))
        .await;
        current = read(store, name).await?;
    }
    anyhow::bail!(
        "moving pointer {}: it kept changing under {ATTEMPTS} attempts; nothing was written, try again",
        store.url_of(&key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tag: &str) -> Manifest {
        Manifest {
            format_version: 1,
            tag: tag.into(),
            archive: format!("blobs/sha256/{tag}.tar.zst"),
            compression: crate::archive::Compression::Zstd,
            sha256: format!("sha-{tag}"),
            size: 10,
            files: 1,
            unpacked_bytes: 5,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "test".into(),
            source_revision: None,
        }
    }

    #[test]
    fn serial_and_history_advance() {
        let first = Pointer::next(None, &manifest("v1"), "t1", "me");
        assert_eq!((first.serial, first.history.len()), (1, 0));
        let mut pointer = first;
        for i in 2..=30 {
            pointer = Pointer::next(
                Some(&pointer),
                &manifest(&format!("v{i}")),
                &format!("t{i}"),
                "me",
            );
        }
        assert_eq!(pointer.serial, 30);
        assert_eq!(pointer.history.len(), HISTORY);
        assert_eq!(
            pointer.history[0],
            HistoryEntry {
                tag: "v29".into(),
                serial: 29,
                updated_at: "t29".into()
            }
        );
        assert_eq!(pointer.history[HISTORY - 1].serial, 10);
    }

    #[test]
    fn json_has_exactly_the_design_fields() {
        let pointer = Pointer::next(None, &manifest("v1"), "t1", "me");
        let json: serde_json::Value = serde_json::from_slice(&pointer.to_json()).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "format_version",
            "tag",
            "sha256",
            "size",
            "serial",
            "updated_at",
            "updated_by",
            "history",
        ];
        keys.sort();
        expected.sort();
        assert_eq!(keys, expected);
    }
}
