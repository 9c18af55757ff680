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
use crate::archive::index::{Entry, EntryKind, Index};
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
    check_made_for(&header, base, expected)?;
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
    let old: HashMap<&str, &Entry> = base.index.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    write_carried(&mut pack, &header, &new, &old, base, dest, per_file)?;
    if !pack.fill_buf()?.is_empty() {
        return Err(DeltaError::Mismatch("bytes after its last payload".into()));
    }
    let jobs = reuse_jobs(&header, &new, &old, &base.index, dest)?;
    let reused = reuse_all(&base.dir, &jobs, expected.reuse, per_file)?;
    dirs.apply_modes()?;
    match expected.sync {
        SyncMode::Filesystem => sync_filesystem(dest)?,
        SyncMode::Files => dirs.sync_all()?,
    }
    Ok(Rebuilt {
        index: new,
        reused,
        carried: header.files.len() as u64,
    })
}

/// Refuses a pack made for another tag, base or index than this rebuild's.
fn check_made_for(header: &delta::Header, base: &Base, expected: &Expected) -> Result<(), DeltaError> {
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
    Ok(())
}

fn file_error(path: &str, why: String) -> DeltaError {
    DeltaError::File {
        path: crate::text::printable(path, 256),
        why,
    }
}

/// Writes what the pack carries, in its order, as it streams in: each file decoded
/// (whole, or patched against the base's file at its path) and checked against `new`.
fn write_carried(
    pack: &mut impl BufRead,
    header: &delta::Header,
    new: &Index,
    old: &HashMap<&str, &Entry>,
    base: &Base,
    dest: &Path,
    per_file: bool,
) -> Result<(), DeltaError> {
    let entries: HashMap<&str, &Entry> = new.entries.iter().map(|e| (e.path.as_str(), e)).collect();
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
        let have = delta::decode(&mut *pack, record.bytes, reference.as_deref(), size, &mut file)
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
    Ok(())
}

/// Makes the symlinks of `new`, and lists every file the pack does not carry with where
/// the base has its bytes: the same path when it holds the same bytes, else any path
/// that does.
fn reuse_jobs<'a>(
    header: &'a delta::Header,
    new: &'a Index,
    old: &HashMap<&str, &'a Entry>,
    base: &'a Index,
    dest: &Path,
) -> Result<Vec<Job<'a>>, DeltaError> {
    let sources = delta::sources(base);
    let carried: std::collections::HashSet<&str> = header.files.iter().map(|r| r.path.as_str()).collect();
    let mut jobs = Vec::new();
    for entry in &new.entries {
        match entry.kind {
            EntryKind::Directory => {}
            EntryKind::Symlink => std::os::unix::fs::symlink(
                entry.target.as_deref().unwrap_or_default(),
                dest.join(&entry.path),
            )?,
            EntryKind::File if carried.contains(entry.path.as_str()) => {}
            EntryKind::File => {
                let sha256 = entry.sha256.as_deref().unwrap_or_default();
                let from = match old.get(entry.path.as_str()) {
                    Some(o) if o.sha256.as_deref() == Some(sha256) => o.path.as_str(),
                    _ => sources.get(sha256).copied().ok_or_else(|| {
                        file_error(&entry.path, "neither carried nor held by the base".into())
                    })?,
                };
                jobs.push(Job {
                    from,
                    to: dest.join(&entry.path),
                    mode: entry.mode & MODE_MASK,
                    size: entry.size.unwrap_or_default(),
                    sha256,
                });
            }
        }
    }
    Ok(jobs)
}

/// One file of the new release to be had from the base.
struct Job<'a> {
    /// Its path in the base.
    from: &'a str,
    to: PathBuf,
    mode: u32,
    size: u64,
    sha256: &'a str,
}

/// Threads that copy from the base: the work is mostly waiting on the disk (a cold
/// base is read file by file), so more than there are cores.
const REUSE_THREADS: usize = 8;
/// Files a thread takes at a time: neighbours in path order, so that the folders it
/// keeps open serve the next ones.
const REUSE_CHUNK: usize = 64;

/// Gives every job its file from the base at `root`, on [`REUSE_THREADS`] threads;
/// the first failure stops them all. Returns how many were reused.
fn reuse_all(root: &Path, jobs: &[Job], how: Reuse, per_file: bool) -> Result<u64, DeltaError> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<DeltaError>> = Mutex::new(None);
    let reflinks = AtomicBool::new(true);
    let threads = REUSE_THREADS.min(jobs.len().div_ceil(REUSE_CHUNK)).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let fail = |err: DeltaError| {
                    stop.store(true, Ordering::Relaxed);
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(err);
                };
                let mut base = match crate::files::Beneath::new(root) {
                    Ok(base) => base,
                    Err(err) => return fail(err.into()),
                };
                let mut buffer = vec![0u8; COPY_BUFFER];
                while !stop.load(Ordering::Relaxed) {
                    let start = next.fetch_add(REUSE_CHUNK, Ordering::Relaxed);
                    let Some(chunk) = jobs.get(start..jobs.len().min(start + REUSE_CHUNK)) else {
                        break;
                    };
                    for job in chunk {
                        let copied = Copier {
                            how,
                            per_file,
                            reflinks: &reflinks,
                        }
                        .reuse(&mut base, job, &mut buffer);
                        if let Err(err) = copied {
                            return fail(err);
                        }
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(err) => Err(err),
        None => Ok(jobs.len() as u64),
    }
}

/// Bytes copied through a thread's buffer at a time.
const COPY_BUFFER: usize = 256 << 10;

/// How files are had from the base, as one thread does it.
struct Copier<'a> {
    how: Reuse,
    per_file: bool,
    /// Cleared at the first `FICLONE` the file system refuses: not asked again.
    reflinks: &'a std::sync::atomic::AtomicBool,
}

impl Copier<'_> {
    /// Gives `job.to` the bytes of `job.from`, and checks them against the index.
    fn reuse(
        &self,
        base: &mut crate::files::Beneath,
        job: &Job,
        buffer: &mut [u8],
    ) -> Result<(), DeltaError> {
        let failed = |why: String| DeltaError::File {
            path: crate::text::printable(job.from, 256),
            why: format!("copying it from the base release: {why}"),
        };
        let have = self.copy(base, job, buffer).map_err(|e| failed(e.to_string()))?;
        if have != job.sha256 {
            return Err(failed(format!(
                "it has sha256 {have}, not {} as its index says: changed after it was deployed",
                job.sha256
            )));
        }
        Ok(())
    }

    /// The copy (or link) itself; the sha256 of the bytes `job.to` holds.
    fn copy(&self, base: &mut crate::files::Beneath, job: &Job, buffer: &mut [u8]) -> io::Result<String> {
        use std::sync::atomic::Ordering;
        let mut source = base.open(job.from)?;
        let meta = source.metadata()?;
        // A different size is a file changed since it was deployed, refused before a
        // byte is copied (a sparse file of a terabyte, say).
        if meta.len() != job.size {
            return Err(io::Error::other(format!(
                "it has {} bytes, its index says {}: changed after it was deployed",
                meta.len(),
                job.size
            )));
        }
        if self.how == Reuse::Hardlink && meta.mode() & 0o7777 == job.mode {
            let sha256 = hash((&mut source).take(job.size + 1), buffer)?;
            base.link(job.from, &job.to)?;
            // The name may have been swapped between the open and the link: the link
            // must be the inode that was hashed.
            let linked = fs::symlink_metadata(&job.to)?;
            if (linked.dev(), linked.ino()) != (meta.dev(), meta.ino()) {
                fs::remove_file(&job.to)?;
                return Err(io::Error::other("it was replaced while it was linked"));
            }
            return Ok(sha256);
        }
        let mut target = create(&job.to, job.mode)?;
        let sha256 = if self.reflinks.load(Ordering::Relaxed) && clone(&source, &target) {
            // The clone shares the source's blocks but not its page cache: reading the
            // source (which an instance running it often has in memory) costs less than
            // reading the clone from disk. The bytes hashed are the clone's if no write
            // reached the source between the stat before the clone and the one after
            // the hash: every write moves its ctime, which nothing can set back. A file
            // changed within the last seconds could share a coarse timestamp with a
            // write during the copy, so its clone is read back instead.
            let hashed = hash((&mut source).take(job.size + 1), buffer)?;
            if settled(&meta) && unchanged(&meta, &source.metadata()?) {
                hashed
            } else {
                hash(File::open(&job.to)?.take(job.size + 1), buffer)?
            }
        } else {
            if self.reflinks.load(Ordering::Relaxed) {
                self.reflinks.store(false, Ordering::Relaxed);
            }
            // Read once, hashed and written from the same buffer; never more than one
            // byte past the size the index gives, however the file grows meanwhile.
            let mut hashing = Hashing::new(&mut target);
            let mut limited = (&mut source).take(job.size + 1);
            loop {
                let n = limited.read(buffer)?;
                if n == 0 {
                    break;
                }
                io::Write::write_all(&mut hashing, &buffer[..n])?;
            }
            hashing.finish().1
        };
        if self.per_file {
            target.sync_all()?;
        }
        Ok(sha256)
    }
}

/// The bytes of the base's file a patch refers to: the `size` its index gives, no more.
fn read_base(root: &Path, rel: &str, size: u64) -> Result<Vec<u8>, DeltaError> {
    let failed = |why: String| DeltaError::File {
        path: crate::text::printable(rel, 256),
        why: format!("reading the base release's copy: {why}"),
    };
    let mut source = crate::files::open_beneath(root, rel).map_err(|e| failed(e.to_string()))?;
    let has = source.metadata()?.len();
    if has != size {
        return Err(failed(format!(
            "it has {has} bytes, its index says {size}: changed after it was deployed"
        )));
    }
    let mut bytes = Vec::with_capacity(size.min(delta::PATCH_MAX) as usize);
    (&mut source)
        .take(delta::PATCH_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(e.to_string()))?;
    Ok(bytes)
}

/// Whether a file's last change is far enough in the past (2 s) that a later write
/// cannot leave its ctime as it was, however coarse the file system's clock.
fn settled(meta: &fs::Metadata) -> bool {
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
    std::time::SystemTime::now()
        .duration_since(changed)
        .is_ok_and(|age| age >= std::time::Duration::from_secs(2))
}

/// Whether no write reached a file between two looks at it.
fn unchanged(before: &fs::Metadata, after: &fs::Metadata) -> bool {
    let stamp = |m: &fs::Metadata| {
        (
            m.dev(),
            m.ino(),
            m.len(),
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            m.mtime_nsec(),
        )
    };
    stamp(before) == stamp(after)
}

/// `FICLONE`: the whole file shared block for block, where the file system has reflinks.
fn clone(source: &File, target: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call.
    unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) == 0 }
}

/// The sha256 of what `reader` yields. Callers bound it (`take`) one byte past the size
/// they expect, so a file that grows meanwhile is read no further than that.
fn hash(mut reader: impl Read, buffer: &mut [u8]) -> io::Result<String> {
    let mut hashing = Hashing::new(io::sink());
    loop {
        let n = reader.read(buffer)?;
        if n == 0 {
            break;
        }
        io::Write::write_all(&mut hashing, &buffer[..n])?;
    }
    Ok(hashing.finish().1)
}
