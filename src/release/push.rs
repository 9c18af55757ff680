//! `release push`: package (or check) a build, upload it content-addressed, create its
//! manifest, and optionally move a pointer to it.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::archive::index::Index;
use crate::archive::inspect::{InspectError, inspect};
use crate::archive::pack::{PackError, mtime_from_env, pack_dir};
use crate::archive::policy::Limits;
use crate::archive::{Compression, Hashing};
use crate::error::BadInput;
use crate::store::{Store, layout};

use super::manifest::{FORMAT_VERSION, IndexRef};
use super::sign::Author;
use super::{Manifest, Moved, move_pointer};

/// What a push did.
#[derive(Debug)]
pub struct Pushed {
    pub manifest: Manifest,
    /// `false` when the store already held the archive.
    pub uploaded: bool,
    pub pointer: Option<(String, Moved)>,
    /// The delta packs made, and why any default one was not.
    pub deltas: Vec<Result<super::delta::Made, String>>,
}

/// What a push checks the tree against, and which packs it makes.
#[derive(Clone, Debug)]
pub struct Options {
    pub limits: Limits,
    pub deltas: Deltas,
}

/// Which delta packs a push makes (DESIGN §6.9).
#[derive(Clone, Debug)]
pub enum Deltas {
    /// From the last this many tags the target pointer names (none without a pointer).
    Recent(usize),
    /// From these tags; a failure fails the push before its pointer moves.
    From(Vec<String>),
}

/// An archive ready to upload: a packaged temp file or the operator's own file.
struct Prepared {
    path: PathBuf,
    compression: Compression,
    sha256: String,
    size: u64,
    files: u64,
    unpacked_bytes: u64,
    index: Index,
}

/// Pushes `source` as `tag`, then moves `pointer` to it when given. `progress` sees the
/// archive's size once, then every chunk sent.
pub async fn push(
    store: &Store,
    source: &Path,
    tag: &str,
    pointer: Option<&str>,
    options: &Options,
    author: &Author,
    mut progress: impl FnMut(Progress),
) -> anyhow::Result<Pushed> {
    let Options { limits, deltas } = options;
    let limits = *limits;
    let manifest_key = layout::manifest(tag);
    if store.size_of(&manifest_key).await?.is_some() {
        return Err(tag_exists(store, tag));
    }
    // Before any work: a store that cannot guard the tag stops the push here, and so
    // does a signed pointer this push could not move (the tag would be spent).
    store.check_writes().await?;
    if let Some(name) = pointer {
        super::moves::refuse_unsigned_change(store, &layout::pointer(name), author).await?;
    }
    // The packs asked for by name must be possible before the tag is spent.
    if let Deltas::From(bases) = deltas {
        for base in bases {
            super::delta::check_base(store, tag, base, "--delta-from").await?;
        }
    }
    // The temp archive (if any) lives until the push ends, and no longer.
    let (prepared, _temp) = prepare_off_thread(source, limits).await?;
    let archive = layout::blob(&prepared.sha256, prepared.compression);
    let uploaded = if store.size_of(&archive).await? == Some(prepared.size) {
        tracing::info!("{} is already in the store", archive);
        false
    } else {
        progress(Progress::Start(prepared.size));
        let sent = |n| progress(Progress::Sent(n));
        store
            .upload(&archive, &prepared.path, &prepared.sha256, sent)
            .await?;
        progress(Progress::Done);
        true
    };
    let index = put_index(store, &prepared.index).await?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tag: tag.to_owned(),
        archive,
        compression: prepared.compression,
        sha256: prepared.sha256,
        size: prepared.size,
        files: prepared.files,
        unpacked_bytes: prepared.unpacked_bytes,
        created_at: super::now(),
        created_by: author.who.clone(),
        source_revision: source_revision(source),
        index: Some(index),
    };
    write_manifest(store, &manifest, author).await?;
    // Before the pointer moves: instances that follow it find the packs there.
    let deltas = make_deltas(store, source, tag, pointer, limits, deltas).await?;
    let pointer = match pointer {
        Some(name) => {
            let target = manifest.clone();
            let moved = move_pointer(store, name, author, |_| std::future::ready(Ok(target)))
                .await
                .with_context(|| {
                    format!("pushed {tag}, but the pointer did not move (run `bootlace release promote {tag} --env …`)")
                })?;
            Some((name.to_owned(), moved))
        }
        None => None,
    };
    Ok(Pushed {
        manifest,
        uploaded,
        pointer,
        deltas,
    })
}

/// Makes the packs `deltas` asks for, into `tag` from each base.
async fn make_deltas(
    store: &Store,
    source: &Path,
    tag: &str,
    pointer: Option<&str>,
    limits: Limits,
    deltas: &Deltas,
) -> anyhow::Result<Vec<Result<super::delta::Made, String>>> {
    let (bases, required) = match (deltas, pointer) {
        (Deltas::From(tags), _) => (tags.clone(), true),
        (Deltas::Recent(count), Some(name)) => match super::Pointer::load(store, name).await {
            Ok(Some(current)) => (super::delta::default_bases(&current, tag, *count), false),
            Ok(None) => (Vec::new(), false),
            Err(err) => {
                let why = format!(
                    "no delta packs: reading pointer {name}: {}",
                    crate::error::one_line(&err)
                );
                return Ok(vec![Err(why)]);
            }
        },
        (Deltas::Recent(_), None) => (Vec::new(), false),
    };
    let mut made = Vec::new();
    for base in bases {
        match super::delta::make(store, tag, &base, super::delta::new_files_of(source), limits).await {
            Ok(pack) => made.push(Ok(pack)),
            Err(err) if required => {
                return Err(err.context(format!(
                    "pushed {tag}, but the delta pack from {base} was not made, and the pointer did not move \
                     (`bootlace release delta {tag} --from {base}` makes it)"
                )));
            }
            Err(err) => made.push(Err(format!(
                "no delta pack from {base}: {}",
                crate::error::one_line(&err)
            ))),
        }
    }
    Ok(made)
}

/// [`prepare`]s `source` (a directory is packaged, an archive pushed as it is) on a
/// blocking thread. The temp archive belongs to the caller's future, not to that
/// thread: when the push is dropped (interrupted by a signal, say), it is removed at
/// once.
async fn prepare_off_thread(
    source: &Path,
    limits: Limits,
) -> anyhow::Result<(Prepared, Option<tempfile::NamedTempFile>)> {
    let temp = match source.is_dir() {
        true => Some(
            tempfile::Builder::new()
                .prefix("bootlace-push-")
                .suffix(".tar.zst")
                .tempfile()
                .context("creating a temporary archive")?,
        ),
        false => None,
    };
    let target = temp
        .as_ref()
        .map(|t| anyhow::Ok((t.path().to_owned(), t.reopen()?)))
        .transpose()?;
    let owned = source.to_owned();
    let prepared = tokio::task::spawn_blocking(move || prepare(&owned, target, limits)).await??;
    Ok((prepared, temp))
}

/// Uploads a release's file index at its content address, unless the store has it.
pub(crate) async fn put_index(store: &Store, index: &Index) -> anyhow::Result<IndexRef> {
    let (sha256, _) = index.digest();
    let key = layout::index_blob(&sha256);
    let stored = index.to_stored();
    let size = stored.len() as u64;
    if size > crate::archive::index::MAX_STORED_BYTES {
        return Err(BadInput(format!(
            "the release's file index is {size} bytes compressed, over the {}-byte limit",
            crate::archive::index::MAX_STORED_BYTES
        ))
        .into());
    }
    // The same JSON may compress to other bytes under another zstd: either is the index.
    let size = match store.size_of(&key).await? {
        Some(size) => size,
        None => {
            store.put(&key, stored.into()).await?;
            size
        }
    };
    Ok(IndexRef { key, sha256, size })
}

/// Creates the tag's manifest (refused if another push holds the tag) and signs it.
async fn write_manifest(store: &Store, manifest: &Manifest, author: &Author) -> anyhow::Result<()> {
    let manifest_key = layout::manifest(&manifest.tag);
    let bytes = manifest.to_json();
    if !store.create(&manifest_key, bytes.clone().into()).await? {
        // Either another push won the tag, or our own write landed and its answer was lost.
        if Manifest::load(store, &manifest.tag).await?.as_ref() != Some(manifest) {
            return Err(tag_exists(store, &manifest.tag));
        }
    }
    // The tag is ours: its signature goes beside it. (Until it is there, instances
    // that check signatures refuse the tag; no pointer names it yet.)
    if let Some(signer) = &author.signer {
        let signature = signer.sign(&author.keys.namespace(store), &manifest_key, &bytes, None)?;
        store
            .put(
                &crate::release::signature::signature_key(&manifest_key),
                signature,
            )
            .await
            .with_context(|| {
                format!(
                    "pushed {}, but its signature was not written (push the build again under a new tag)",
                    manifest.tag
                )
            })?;
    }
    Ok(())
}

/// Upload progress, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    Start(u64),
    Sent(u64),
    Done,
}

fn tag_exists(store: &Store, tag: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "tag {tag} already exists in {}: tags are immutable, push under a new tag",
        store.url()
    )
}

/// Packages a directory into `temp` (its path and an open handle), or checks an
/// existing archive.
fn prepare(source: &Path, temp: Option<(PathBuf, File)>, limits: Limits) -> anyhow::Result<Prepared> {
    let meta = std::fs::metadata(source).map_err(|e| BadInput(format!("{}: {e}", source.display())))?;
    match temp {
        Some(temp) if meta.is_dir() => return package(source, temp, limits),
        None if meta.is_dir() => anyhow::bail!("{}: became a directory while pushing", source.display()),
        _ => {}
    }
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let compression = Compression::from_name(&name).ok_or_else(|| {
        BadInput(format!(
            "{}: expected a directory or a .tar.zst/.tar.gz archive",
            source.display()
        ))
    })?;
    let file = File::open(source).map_err(|e| anyhow::anyhow!("reading {}: {e}", source.display()))?;
    let inspected =
        inspect(BufReader::with_capacity(1 << 20, file), compression, limits).map_err(|e| match e {
            InspectError::Decode(_) | InspectError::WrongFormat(_) | InspectError::Policy(_) => {
                BadInput(format!("{}: {e}", source.display()))
            }
        })?;
    Ok(Prepared {
        path: source.to_owned(),
        compression,
        sha256: inspected.sha256,
        size: inspected.size,
        files: inspected.totals.files,
        unpacked_bytes: inspected.totals.unpacked_bytes,
        index: inspected.index,
    })
}

fn package(dir: &Path, (path, file): (PathBuf, File), limits: Limits) -> anyhow::Result<Prepared> {
    let mtime = mtime_from_env().map_err(|e| BadInput(e.to_string()))?;
    let out = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let (out, totals, index) = pack_dir(dir, mtime, limits, out).map_err(|e| match e {
        PackError::Io { .. } => anyhow::anyhow!("packaging {}: {e}", dir.display()),
        other => BadInput(format!("packaging {}: {other}", dir.display())).into(),
    })?;
    let (writer, sha256, size) = out.finish();
    writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error()))?;
    Ok(Prepared {
        path,
        compression: Compression::Zstd,
        sha256,
        size,
        files: totals.files,
        unpacked_bytes: totals.unpacked_bytes,
        index,
    })
}

/// `git rev-parse HEAD` where the source lives, when it is in a git work tree.
fn source_revision(source: &Path) -> Option<String> {
    let dir = if source.is_dir() { source } else { source.parent()? };
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let revision = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !revision.is_empty()).then_some(revision)
}
