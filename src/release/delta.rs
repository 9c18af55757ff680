//! Making delta packs (DESIGN §6.9) on the publisher's side: from the store's indexes of
//! two releases, the new files (from the tree being pushed, or the new archive), and,
//! for patches, one streaming read of the old archive. The pack is uploaded to
//! `deltas/<tag>/<old archive sha256>`, beside the immutable manifest.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Manifest;
use crate::archive::delta::{Builder, PATCH_MAX, patch_bases, write_pack};
use crate::archive::entries::walk;
use crate::archive::index::{self, Index};
use crate::archive::policy::{Kind, Limits};
use crate::archive::{Compression, Hashing};
use crate::error::BadInput;
use crate::store::reader::spawn_reader;
use crate::store::{Store, layout};

/// Old bytes held in memory for patches, in all: past it, files go whole.
const BASES_BUDGET: u64 = 256 << 20;

/// Where the new release's files are read from.
pub enum NewFiles {
    /// The tree that was pushed.
    Dir(PathBuf),
    /// An archive file on this machine.
    File(PathBuf, Compression),
    /// The release's archive in the store.
    Store,
}

/// A pack made and uploaded.
#[derive(Debug, serde::Serialize)]
pub struct Made {
    pub tag: String,
    pub from: String,
    pub key: String,
    pub bytes: u64,
    /// Files the pack carries (the rest are copies of the old release's).
    pub files: u64,
    pub patches: u64,
    pub removed: u64,
    /// Whether it was uploaded: a pack not smaller than the new archive saves nothing
    /// (an instance would not read it), so it is not stored.
    pub stored: bool,
    /// The new release's archive, in bytes, for comparison.
    pub archive_bytes: u64,
}

/// The manifest of `tag` with its index, for a pack; a tag without one (pushed before
/// indexes) cannot be one end of a pack.
async fn indexed(store: &Store, tag: &str, limits: Limits) -> anyhow::Result<(Manifest, Index)> {
    let manifest = Manifest::load_complete(store, tag).await?;
    let Some(named) = &manifest.index else {
        return Err(BadInput(format!(
            "release {tag} has no file index (pushed by an older bootlace): no delta can start or end at it"
        ))
        .into());
    };
    let object = store
        .get(&named.key, index::MAX_STORED_BYTES)
        .await?
        .ok_or_else(|| anyhow::anyhow!("release {tag}: its index {} is missing", store.url_of(&named.key)))?;
    let index = Index::from_stored(&object.bytes, &named.sha256, limits)
        .map_err(|e| anyhow::anyhow!("release {tag}: its index {}: {e}", store.url_of(&named.key)))?;
    Ok((manifest, index))
}

/// Checks, before anything is made or spent, that `base` can start a pack to `tag`:
/// another tag, a release in the store, with a file index. `flag` names the option
/// that gave it; each refusal is the user's input (exit 2).
pub async fn check_base(store: &Store, tag: &str, base: &str, flag: &str) -> anyhow::Result<()> {
    super::check_tag(base)?;
    if base == tag {
        return Err(BadInput(format!(
            "{flag} {base}: a delta from {tag} to itself saves nothing"
        ))
        .into());
    }
    match Manifest::load(store, base).await? {
        Some(manifest) if manifest.index.is_some() => Ok(()),
        Some(_) => Err(BadInput(format!(
            "{flag} {base}: that release has no file index (pushed by an older bootlace)"
        ))
        .into()),
        None => Err(BadInput(format!("{flag} {base}: no release {base} in {}", store.url())).into()),
    }
}

/// Makes the pack from `from` to `tag` and uploads it.
pub async fn make(
    store: &Store,
    tag: &str,
    from: &str,
    new_files: NewFiles,
    limits: Limits,
) -> anyhow::Result<Made> {
    if tag == from {
        return Err(BadInput(format!("a delta from {tag} to itself saves nothing")).into());
    }
    let (new_manifest, new_index) = indexed(store, tag, limits).await?;
    let (old_manifest, old_index) = indexed(store, from, limits).await?;
    let new_files = match new_files {
        NewFiles::Store => {
            let stream = store.get_stream(&new_manifest.archive, None).await?;
            Source::Archive(Box::new(spawn_reader(stream)), new_manifest.compression)
        }
        NewFiles::File(path, compression) => {
            let file = File::open(&path).with_context(|| format!("reading {}", path.display()))?;
            Source::Archive(Box::new(BufReader::with_capacity(1 << 20, file)), compression)
        }
        NewFiles::Dir(path) => Source::Dir(path),
    };
    // The old archive is read only when a patch needs its bytes.
    let wanted = patch_bases(&old_index, &new_index);
    let old_archive = match wanted.is_empty() {
        true => None,
        false => Some(spawn_reader(store.get_stream(&old_manifest.archive, None).await?)),
    };
    let base_sha256 = old_manifest.sha256.clone();
    let (tag_owned, from_owned) = (tag.to_owned(), from.to_owned());
    let built = tokio::task::spawn_blocking(move || {
        build(
            &old_index,
            old_archive.map(|reader| (reader, old_manifest.compression, wanted)),
            &new_index,
            new_files,
            &tag_owned,
            &base_sha256,
            limits,
        )
    })
    .await
    .context("building the delta pack stopped")?
    .with_context(|| format!("building the delta pack from {from_owned} to {tag}"))?;
    let key = layout::delta(tag, &old_manifest.sha256);
    let stored = built.bytes < new_manifest.size;
    if stored {
        store
            .upload(&key, built.file.path(), &built.sha256, |_| {})
            .await?;
    }
    Ok(Made {
        stored,
        archive_bytes: new_manifest.size,
        tag: tag.to_owned(),
        from: from.to_owned(),
        key,
        bytes: built.bytes,
        files: built.files,
        patches: built.patches,
        removed: built.removed,
    })
}

enum Source {
    Dir(PathBuf),
    Archive(Box<dyn Read + Send>, Compression),
}

struct Built {
    file: tempfile::NamedTempFile,
    sha256: String,
    bytes: u64,
    files: u64,
    patches: u64,
    removed: u64,
}

fn build(
    old: &Index,
    old_archive: Option<(impl Read, Compression, HashSet<String>)>,
    new: &Index,
    source: Source,
    tag: &str,
    base_sha256: &str,
    limits: Limits,
) -> anyhow::Result<Built> {
    let payloads = tempfile::tempfile().context("creating a temporary file")?;
    let mut builder = Builder::new(old, new, BufWriter::with_capacity(1 << 20, payloads))?;
    // One read of the old archive, for the old bytes a patch needs.
    if let Some((old_archive, old_compression, wanted)) = old_archive {
        let mut budget = BASES_BUDGET;
        // Hashed as it is read: old bytes from an archive that is not the one the
        // manifest names would make a pack no instance can use.
        let mut hashing = Hashing::new(old_archive);
        let decoder = old_compression.decoder(BufReader::with_capacity(1 << 20, &mut hashing))?;
        let mut failed = None;
        walk(decoder, limits, |checked, entry| {
            if checked.kind == Kind::File && wanted.contains(&checked.path) && entry.size() <= budget {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.take(PATCH_MAX + 1).read_to_end(&mut bytes)?;
                budget -= bytes.len() as u64;
                if let Err(err) = builder.add_base(checked.path.clone(), bytes) {
                    let message = err.to_string();
                    failed = Some(err);
                    return Err(io::Error::other(message));
                }
            }
            // Read to its end: what a header is allowed is counted from there.
            io::copy(entry, &mut io::sink()).map(drop)
        })
        .map_err(|e| match failed.take() {
            Some(err) => anyhow::Error::new(err),
            None => anyhow::anyhow!("reading the old archive: {e}"),
        })?;
        io::copy(&mut hashing, &mut io::sink()).context("reading the old archive")?;
        let (_, have, _) = hashing.finish();
        if have != base_sha256 {
            anyhow::bail!("the old archive has sha256 {have}, not {base_sha256} as its manifest says");
        }
    }
    match source {
        Source::Dir(root) => {
            let paths: Vec<String> = new
                .entries
                .iter()
                .filter(|e| builder.wants(&e.path))
                .map(|e| e.path.clone())
                .collect();
            for path in paths {
                let full = root.join(&path);
                let file = File::open(&full).with_context(|| format!("reading {}", full.display()))?;
                builder.add_file(&path, BufReader::with_capacity(1 << 20, file))?;
            }
        }
        Source::Archive(reader, compression) => {
            let decoder = compression.decoder(BufReader::with_capacity(1 << 20, reader))?;
            let mut failed = None;
            walk(decoder, limits, |checked, entry| {
                if checked.kind == Kind::File
                    && builder.wants(&checked.path)
                    && let Err(err) = builder.add_file(&checked.path, &mut *entry)
                {
                    let message = err.to_string();
                    failed = Some(err);
                    return Err(io::Error::other(message));
                }
                io::copy(entry, &mut io::sink()).map(drop)
            })
            .map_err(|e| match failed.take() {
                Some(err) => anyhow::Error::new(err),
                None => anyhow::anyhow!("reading the new archive: {e}"),
            })?;
        }
    }
    let (header, payloads) = builder.finish(tag, base_sha256)?;
    let mut payloads = payloads.into_inner().map_err(|e| e.into_error())?;
    payloads.rewind()?;
    let out = tempfile::Builder::new()
        .prefix("bootlace-delta-")
        .tempfile()
        .context("creating a temporary pack")?;
    let mut writer = Hashing::new(BufWriter::with_capacity(1 << 20, out.reopen()?));
    write_pack(&mut writer, &header, BufReader::with_capacity(1 << 20, payloads))?;
    writer.flush()?;
    let (_, sha256, bytes) = writer.finish();
    Ok(Built {
        file: out,
        sha256,
        bytes,
        files: header.files.len() as u64,
        patches: header
            .files
            .iter()
            .filter(|r| r.how == crate::archive::delta::How::Patch)
            .count() as u64,
        removed: header.removed.len() as u64,
    })
}

/// The tags a push makes packs from by default: the ones the pointer's history names
/// (its current tag first), the last `count`, without `tag` itself.
pub fn default_bases(pointer: &super::Pointer, tag: &str, count: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    std::iter::once(pointer.tag.as_str())
        .chain(pointer.history.iter().map(|h| h.tag.as_str()))
        .filter(|t| *t != tag && seen.insert(*t))
        .take(count)
        .map(str::to_owned)
        .collect()
}

/// `dir` as given to `release push`: where a pack's new files come from.
pub fn new_files_of(source: &Path) -> NewFiles {
    if source.is_dir() {
        NewFiles::Dir(source.to_owned())
    } else {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match Compression::from_name(&name) {
            Some(compression) => NewFiles::File(source.to_owned(), compression),
            None => NewFiles::Store,
        }
    }
}
