//! The delta path of a deploy (DESIGN §6.9): when the manifest names a file index and
//! the store holds a pack from the release `current` names here, one GET of that pack
//! rebuilds the new release ([`super::rebuild`]); anything else, and any failure on the
//! way, leaves the full download to do the work, with the reason said.

use std::path::Path;

use super::fetch::{self, Progress};
use super::rebuild::{Base, DeltaMode, Expected, Rebuilt, rebuild};
use super::state::StateDir;
use crate::release::Manifest;
use crate::store::{Store, layout};

/// How a delta attempt ended.
pub enum Attempt {
    /// The release is rebuilt in the staging dir, from a pack of `bytes` bytes.
    Rebuilt { rebuilt: Rebuilt, bytes: u64 },
    /// No delta was tried: `why`, when a pack could have been expected.
    Skipped(Option<String>),
    /// A pack or the base's index was there but did not give the release: why (the
    /// staging dir may hold a partial tree, to be discarded).
    Failed(String),
}

/// Where a delta to `manifest`'s release could start: the index the manifest names,
/// and the release `current` names here with its archive sha256. `None` when no delta
/// can be tried (delta off, a manifest without an index, nothing current).
fn start<'m>(
    config: &super::Config,
    state: &StateDir,
    manifest: &'m Manifest,
) -> Option<(&'m crate::release::manifest::IndexRef, String, String)> {
    let index = manifest
        .index
        .as_ref()
        .filter(|_| config.delta == DeltaMode::Auto)?;
    let tag = state.current()?;
    let sha256 = state.sha256_of(&tag)?;
    Some((index, tag, sha256))
}

/// The path a deploy of `manifest` would take now, and what it would download.
#[derive(Debug, serde::Serialize)]
#[serde(tag = "via", rename_all = "lowercase")]
pub enum Preview {
    /// One pack of `bytes` from the release `from`, held here.
    Delta { from: String, bytes: u64 },
    /// The archive (and its index): `bytes`; `why` when a delta could have served.
    Full { bytes: u64, why: Option<String> },
}

/// Says which path a deploy of `manifest` would take, as `plan` shows it: one HEAD of
/// the pack; nothing is downloaded or written.
pub async fn preview(
    config: &super::Config,
    state: &StateDir,
    store: &Store,
    manifest: &Manifest,
) -> Preview {
    let full = |why: Option<String>| {
        let index = manifest
            .index
            .as_ref()
            .filter(|_| config.delta == DeltaMode::Auto)
            .map_or(0, |index| index.size);
        Preview::Full {
            bytes: manifest.size + index,
            // A store's error may quote what it answered.
            why: why.map(|why| crate::text::printable(&why, 512)),
        }
    };
    let Some((_, tag, sha256)) = start(config, state, manifest) else {
        return full(None);
    };
    match state.index_of(&tag, config.limits()) {
        Ok(Some(_)) => {}
        Ok(None) => return full(Some(no_index(&tag))),
        Err(why) => return full(Some(unreadable_index(&tag, &why))),
    }
    let key = layout::delta(&manifest.tag, &sha256);
    match store.size_of(&key).await {
        Ok(Some(bytes)) if bytes < manifest.size => Preview::Delta { from: tag, bytes },
        Ok(Some(bytes)) => full(Some(too_large(&store.url_of(&key), bytes, manifest))),
        Ok(None) => full(Some(no_pack(&tag, &store.url_of(&key)))),
        Err(err) => full(Some(format!("checking the delta pack: {err}"))),
    }
}

/// Tries to rebuild `manifest`'s release in `staging` from a delta pack.
pub async fn attempt(
    config: &super::Config,
    state: &StateDir,
    store: &Store,
    manifest: &Manifest,
    staging: &Path,
    progress: Progress,
) -> Attempt {
    let Some((index, tag, sha256)) = start(config, state, manifest) else {
        return Attempt::Skipped(None);
    };
    let mut limits = config.limits();
    let base_index = match state.index_of(&tag, limits) {
        Ok(Some(index)) => index,
        Ok(None) => return Attempt::Skipped(Some(no_index(&tag))),
        Err(why) => {
            return Attempt::Failed(unreadable_index(&tag, &why));
        }
    };
    let key = layout::delta(&manifest.tag, &sha256);
    let url = store.url_of(&key);
    let (size, stream) = match store.open_stream(&key, None).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return Attempt::Skipped(Some(no_pack(&tag, &url))),
        Err(err) => return Attempt::Failed(format!("reading the delta pack: {err}")),
    };
    // A pack larger than the archive saves nothing, and is not read.
    if size >= manifest.size {
        return Attempt::Failed(too_large(&url, size, manifest));
    }
    limits.max_unpacked_bytes = limits.max_unpacked_bytes.min(manifest.unpacked_bytes);
    let base = Base {
        dir: state.release(&tag),
        sha256,
        index: base_index,
    };
    let expected = Expected {
        tag: manifest.tag.clone(),
        index_sha256: index.sha256.clone(),
        limits,
        sync: config.sync,
        reuse: config.reuse,
    };
    let dest = staging.to_owned();
    let piped = match fetch::pipe(
        config,
        store,
        &key,
        size,
        Some(stream),
        progress,
        move |incoming| rebuild(incoming, &base, &expected, &dest),
    )
    .await
    {
        Ok(piped) => piped,
        Err(err) => return Attempt::Failed(crate::error::one_line(&err)),
    };
    if let Err(err) = piped.sent {
        return Attempt::Failed(format!(
            "the delta pack from {tag}: {}",
            crate::error::one_line(&err)
        ));
    }
    match piped.consumed {
        Ok(rebuilt) => {
            let (files, bytes) = rebuilt.index.totals();
            if (files, bytes) != (manifest.files, manifest.unpacked_bytes) {
                return Attempt::Failed(format!(
                    "the delta pack from {tag} rebuilt {files} files of {bytes} bytes, the manifest says {} of {}",
                    manifest.files, manifest.unpacked_bytes
                ));
            }
            Attempt::Rebuilt {
                rebuilt,
                bytes: piped.size,
            }
        }
        Err(err) => Attempt::Failed(format!("the delta pack from {tag} ({url}): {err}")),
    }
}

/// Why no delta was tried from `tag`: the instance kept no index for it.
fn no_index(tag: &str) -> String {
    format!("no file index is kept for {tag}")
}

/// Why no delta could be had from `tag`: the index kept for it does not read.
fn unreadable_index(tag: &str, why: &str) -> String {
    format!("the file index kept for {tag} does not read: {why}")
}

/// Why no delta was tried from `tag`: the store has no pack at `url`.
fn no_pack(tag: &str, url: &str) -> String {
    format!("no delta pack from {tag} ({url})")
}

/// Why the pack at `url`, of `size` bytes, is not read: it saves nothing.
fn too_large(url: &str, size: u64, manifest: &Manifest) -> String {
    format!(
        "the delta pack {url} is {size} bytes, not smaller than the archive ({} bytes)",
        manifest.size
    )
}
