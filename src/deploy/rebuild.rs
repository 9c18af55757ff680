//! Rebuilding a release from a delta pack (DESIGN §6.9) into a staging dir: the new
//! index out of the pack, checked against the manifest's sha256; each file the pack
//! carries decoded from it; every other file copied from the base release (a reflink
//! where the file system has them, else `copy_file_range`); symlinks and directories
//! from the index. Every file written is hashed and must match the index, so the tree
//! is the one the manifest names or the rebuild fails (and the caller deploys in full).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::unpack::{Dirs, MODE_MASK, SyncMode, create, sync_filesystem};
use crate::archive::Hashing;
use crate::archive::delta::{self, DeltaError, How};
use crate::archive::index::{EntryKind, Index};
use crate::archive::policy::Limits;

/// `deploy.delta`: whether an update may come as a delta pack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaMode {
    /// A pack when the store has one from a release held here, else the full archive.
    #[default]
    Auto,
    Off,
}

/// `deploy.reuse`: how an unchanged file reaches the new release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    /// A copy of its own (a reflink where the file system shares blocks).
    #[default]
    Copy,
    /// The same inode as in the base: no copy at all, but an init that writes into its
    /// release then also changes the release it would roll back to.
    Hardlink,
}

/// The release a pack starts from.
pub struct Base {
    pub dir: PathBuf,
    /// Its archive sha256.
    pub sha256: String,
    pub index: Index,
}

/// What the rebuild must produce, and how.
pub struct Expected {
    pub tag: String,
    /// The new index's sha256, as the manifest names it.
    pub index_sha256: String,
    pub limits: Limits,
    pub sync: SyncMode,
    pub reuse: Reuse,
}

/// A rebuilt release.
#[derive(Debug)]
pub struct Rebuilt {
    pub index: Index,
    /// Files copied (or linked) from the base, and files decoded from the pack.
    pub reused: u64,
    pub carried: u64,
}

/// Rebuilds the release `expected` names from `pack` and `base` into `dest` (empty).
pub fn rebuild(
    mut pack: impl BufRead,
    base: &Base,
    expected: &Expected,
    dest: &Path,
) -> Result<Rebuilt, DeltaError> {
    let header = delta::read_header(&mut pack)?;
    let base_index = base.index.digest().0;
    let made_for = [
        ("tag", &header.tag, &expected.tag),
        ("base archive", &header.base_sha256, &base.sha256),
        ("base index", &header.base_index_sha256, &base_index),
        ("index", &header.index_sha256, &expected.index_sha256),
    ];
    for (what, has, wanted) in made_for {
        if has != wanted {
            return Err(DeltaError::Mismatch(format!(
                "it is for {what} {}, not {wanted}",
                crate::text::printable(has, 80)
            )));
        }
    }
    let new = delta::read_index(
        &mut pack,
        &header,
        &base.index,
        &expected.index_sha256,
        expected.limits,
    )?;
    delta::check_records(&header, &base.index, &new)?;

    let per_file = expected.sync == SyncMode::Files;
    let mut dirs = Dirs::new(dest);
    for entry in &new.entries {
        match entry.kind {
            EntryKind::Directory => dirs.explicit(&entry.path, entry.mode & MODE_MASK)?,
            _ => dirs.parent_of(&entry.path)?,
        }
    }
    let entries: HashMap<&str, &crate::archive::index::Entry> =
        new.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let old: HashMap<&str, &crate::archive::index::Entry> =
        base.index.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let file_error = |path: &str, why: String| DeltaError::File {
        path: crate::text::printable(path, 256),
        why,
    };

    // What the pack carries, in its order, as it streams in.
    for record in &header.files {
        let Some(entry) = entries.get(record.path.as_str()) else {
            return Err(file_error(&record.path, "carried, but not in the index".into()));
        };
        let (size, sha256) = (
            entry.size.unwrap_or_default(),
            entry.sha256.as_deref().unwrap_or_default(),
        );
        let reference = match record.how {
            How::Whole => None,
            How::Patch => {
                let Some(old) = old
                    .get(record.path.as_str())
                    .filter(|o| o.kind == EntryKind::File)
                else {
                    return Err(file_error(
                        &record.path,
                        "a patch, but the base has no such file".into(),
                    ));
                };
                Some(read_base(&base.dir, &old.path, old.size.unwrap_or_default())?)
            }
        };
        let path = dest.join(&entry.path);
        let mut file = create(&path, entry.mode & MODE_MASK)?;
        let have = delta::decode(&mut pack, record.bytes, reference.as_deref(), size, &mut file)
            .map_err(|e| file_error(&record.path, e.to_string()))?;
        if have != sha256 {
            return Err(file_error(
                &record.path,
                format!("rebuilt with sha256 {have}, the index says {sha256}"),
            ));
        }
        if per_file {
            file.sync_all()?;
        }
    }
    if !pack.fill_buf()?.is_empty() {
        return Err(DeltaError::Mismatch("bytes after its last payload".into()));
    }

    // Everything else, from the base: the same path when it holds the same bytes, else
    // any path that does.
    let sources = delta::sources(&base.index);
    let carried = header.files.len() as u64;
    let mut reused = 0u64;
    let carried_paths: std::collections::HashSet<&str> =
        header.files.iter().map(|r| r.path.as_str()).collect();
    for entry in &new.entries {
        let path = dest.join(&entry.path);
        match entry.kind {
            EntryKind::Directory => {}
            EntryKind::Symlink => {
                std::os::unix::fs::symlink(entry.target.as_deref().unwrap_or_default(), &path)?
            }
            EntryKind::File if carried_paths.contains(entry.path.as_str()) => {}
            EntryKind::File => {
                let sha256 = entry.sha256.as_deref().unwrap_or_default();
                let from = match old.get(entry.path.as_str()) {
                    Some(o) if o.sha256.as_deref() == Some(sha256) => o.path.as_str(),
                    _ => sources.get(sha256).copied().ok_or_else(|| {
                        file_error(&entry.path, "neither carried nor held by the base".into())
                    })?,
                };
                let target = Target {
                    path: &path,
                    mode: entry.mode & MODE_MASK,
                    size: entry.size.unwrap_or_default(),
                };
                let have = reuse(&base.dir, from, &target, expected.reuse, per_file)
                    .map_err(|e| file_error(from, format!("copying it from the base release: {e}")))?;
                if have != sha256 {
                    return Err(file_error(
                        from,
                        format!(
                            "the base release's copy has sha256 {have}, not {sha256} as its index says: changed after it was deployed"
                        ),
                    ));
                }
                reused += 1;
            }
        }
    }
    dirs.apply_modes()?;
    match expected.sync {
        SyncMode::Filesystem => sync_filesystem(dest)?,
        SyncMode::Files => dirs.sync_all()?,
    }
    Ok(Rebuilt {
        index: new,
        reused,
        carried,
    })
}

/// Opens `rel`, a file of the base release at `root`, for reading: a regular file of
/// `size` bytes, reached without following a link anywhere on the way (a folder of the
/// base swapped for a link would otherwise have the new release read, or share, files
/// from outside the state dir). A different size is a file changed since it was
/// deployed, refused before a byte is copied (a sparse file of a terabyte, say).
fn open_base(root: &Path, rel: &str, size: u64) -> io::Result<crate::files::Beneath> {
    let opened = crate::files::open_beneath(root, rel)?;
    let has = opened.file.metadata()?.len();
    if has != size {
        return Err(io::Error::other(format!(
            "it has {has} bytes, its index says {size}: changed after it was deployed"
        )));
    }
    Ok(opened)
}

/// The bytes of the base's file a patch refers to: the `size` its index gives, no more.
fn read_base(root: &Path, rel: &str, size: u64) -> Result<Vec<u8>, DeltaError> {
    let mut bytes = Vec::with_capacity(size.min(delta::PATCH_MAX) as usize);
    open_base(root, rel, size)
        .and_then(|f| f.file.take(delta::PATCH_MAX + 1).read_to_end(&mut bytes))
        .map_err(|e| DeltaError::File {
            path: crate::text::printable(rel, 256),
            why: format!("reading the base release's copy: {e}"),
        })?;
    Ok(bytes)
}

/// Where a reused file goes in the new release, and what the index says of it.
struct Target<'a> {
    path: &'a Path,
    mode: u32,
    size: u64,
}

/// Gives `to` the bytes of `rel` (a file of the base release at `root`) by `how`; the
/// sha256 of what `to` holds afterwards.
fn reuse(root: &Path, rel: &str, to: &Target, how: Reuse, per_file: bool) -> io::Result<String> {
    let crate::files::Beneath { dir, name, file } = open_base(root, rel, to.size)?;
    let mut source = file;
    let meta = source.metadata()?;
    if how == Reuse::Hardlink && meta.mode() & 0o7777 == to.mode {
        let sha256 = hash(&mut source)?;
        link(&dir, &name, to.path)?;
        // The name may have been swapped between the open and the link: the link must
        // be the inode that was hashed.
        let linked = fs::symlink_metadata(to.path)?;
        if (linked.dev(), linked.ino()) != (meta.dev(), meta.ino()) {
            fs::remove_file(to.path)?;
            return Err(io::Error::other("it was replaced while it was linked"));
        }
        return Ok(sha256);
    }
    let mut target = create(to.path, to.mode)?;
    if !clone(&source, &target) {
        // std's copy between two files is copy_file_range, which shares blocks too
        // where the file system can, and copies in the kernel where it cannot; never
        // more than one byte past the size the index gives, however the file grows.
        io::copy(&mut (&mut source).take(to.size + 1), &mut target)?;
    }
    if per_file {
        target.sync_all()?;
    }
    drop(target);
    let mut written = File::open(to.path)?;
    hash(&mut written)
}

/// A hard link at `to` to the file `name` in the folder `dir`: `linkat` without
/// following a link at `name`.
fn link(dir: &std::os::fd::OwnedFd, name: &std::ffi::CStr, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid folder descriptor and NUL-terminated names; flags 0 links the
    // name itself, never what a link there points at.
    let done = unsafe { libc::linkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_FDCWD, to.as_ptr(), 0) };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `FICLONE`: the whole file shared block for block, where the file system has reflinks.
fn clone(source: &File, target: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call.
    unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) == 0 }
}

fn hash(file: &mut File) -> io::Result<String> {
    let mut hashing = Hashing::new(io::sink());
    io::copy(file, &mut hashing)?;
    Ok(hashing.finish().1)
}
