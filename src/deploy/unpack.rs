//! Unpacking one archive stream into a staging dir under the unpack policy
//! ([`crate::archive::policy`]): one pass that decodes the archive,
//! checks every entry before it touches the disk, and hands small files to a writer
//! thread so that writing overlaps decoding. (The archive bytes are hashed by
//! the caller, on the download side.) Nothing outside `dest` is ever
//! written: no entry may lie under a symlink, files are created with `O_EXCL` and
//! `O_NOFOLLOW`, and nothing is chowned. The caller makes the result visible only after
//! comparing the returned sha256.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use serde::Deserialize;

use crate::archive::Compression;
use crate::archive::entries::{EntryError, walk};
use crate::archive::policy::{Checked, Kind, Limits, Totals};

/// `filesystem`: one `syncfs` after all writes (the default, measured faster);
/// `files`: an fsync per file and directory, for filesystems shared with heavy writers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    #[default]
    Filesystem,
    Files,
}
use crate::files::sync_dir;

/// Files up to this size go to the writer thread; larger ones are streamed in place.
const SMALL_FILE: u64 = 256 << 10;
/// Small files travel to the writer in batches of up to this many bytes (or `BATCH_FILES`
/// files), so that a thread is woken per batch, not per file.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_FILES: usize = 64;
/// Batches queued for the writer: with `BATCH_BYTES`, at most 8 MiB waiting.
const QUEUE: usize = 8;
/// The buffer a large file is copied through.
const COPY_BUFFER: usize = 256 << 10;
/// Mode bits a release keeps: no setuid, setgid, sticky, group or other write.
pub(super) const MODE_MASK: u32 = 0o755;

/// What an unpacked archive held.
#[derive(Debug)]
pub struct Unpacked {
    pub totals: Totals,
}

/// How an unpack runs.
pub struct Options {
    pub limits: Limits,
    pub sync: SyncMode,
    /// Counts files as they are written (a hidden bar off a terminal).
    pub progress: indicatif::ProgressBar,
}

/// Unpacks `archive` into `dest` (an empty directory), then makes it durable.
pub fn unpack(
    archive: impl BufRead,
    compression: Compression,
    dest: &Path,
    options: Options,
) -> Result<Unpacked, EntryError> {
    let mut archive = archive;
    let per_file = options.sync == SyncMode::Files;
    let mut writer = Writer::start(per_file);
    let mut dirs = Dirs::new(dest);
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut files = 0u64;
    let walked = {
        let decoder = compression.decoder(&mut archive).map_err(EntryError::Decode)?;
        walk(decoder, options.limits, |checked, entry| {
            write_entry(
                dest,
                &mut dirs,
                &mut writer,
                &mut buffer,
                checked,
                entry,
                per_file,
            )?;
            files += 1;
            if files.is_multiple_of(512) {
                options.progress.set_message(format!("{files} files"));
            }
            Ok(())
        })
    };
    let written = writer.finish();
    // The writer's own error names the file and the errno; the walk only knows that
    // some write failed.
    let totals = match (walked, written) {
        (Err(EntryError::Write(_)), Err(err)) | (Ok(_), Err(err)) => return Err(EntryError::Write(err)),
        (walked, Ok(())) | (walked @ Err(_), Err(_)) => walked?,
    };
    // Bytes after the compressed stream are still the archive's: read them all, so
    // that the caller's hash covers the whole archive.
    io::copy(&mut archive, &mut io::sink()).map_err(EntryError::Decode)?;
    dirs.apply_modes().map_err(EntryError::Write)?;
    match options.sync {
        SyncMode::Filesystem => sync_filesystem(dest),
        SyncMode::Files => dirs.sync_all(),
    }
    .map_err(EntryError::Write)?;
    Ok(Unpacked { totals })
}

fn write_entry<R: Read>(
    dest: &Path,
    dirs: &mut Dirs,
    writer: &mut Writer,
    buffer: &mut [u8],
    checked: &Checked,
    entry: &mut tar::Entry<'_, R>,
    per_file: bool,
) -> io::Result<()> {
    if checked.path.is_empty() {
        return Ok(());
    }
    let path = dest.join(&checked.path);
    let mode = entry.header().mode().map_err(invalid)? & MODE_MASK;
    match checked.kind {
        Kind::Directory => dirs.explicit(&checked.path, mode),
        Kind::Symlink => {
            dirs.parent_of(&checked.path)?;
            let target = entry
                .link_name()?
                .ok_or_else(|| invalid(io::Error::other("symlink without target")))?;
            std::os::unix::fs::symlink(target, &path)
        }
        Kind::File => {
            dirs.parent_of(&checked.path)?;
            let size = entry.size();
            if size <= SMALL_FILE {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data)?;
                writer.write(path, mode, data)
            } else {
                let mut file = create(&path, mode)?;
                loop {
                    let n = entry.read(buffer)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buffer[..n])?;
                }
                if per_file { file.sync_all() } else { Ok(()) }
            }
        }
    }
}

/// A malformed header field: the archive's fault, not the disk's.
fn invalid(err: io::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

/// Creates a new file: never over an existing one, never through a symlink.
pub(super) fn create(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have taken bits the release keeps.
    if mode & !umask() != mode {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        // SAFETY: umask only swaps the process's mask; it is put back at once.
        let mask = unsafe { libc::umask(0o022) };
        unsafe { libc::umask(mask) };
        mask as u32
    })
}

/// Flushes everything written under `dir` with one `syncfs`, not one fsync per file.
pub(super) fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The directories of a release: created on first need, explicit modes applied last
/// (so that a read-only directory can still be filled).
pub(super) struct Dirs {
    root: PathBuf,
    made: HashSet<String>,
    modes: Vec<(String, u32)>,
}

impl Dirs {
    pub(super) fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            made: HashSet::new(),
            modes: Vec::new(),
        }
    }

    pub(super) fn explicit(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.ensure(path)?;
        // Every one, 0755 too: a folder is made with the umask's mode (0700 under
        // umask 077), not the archive's.
        self.modes.push((path.to_owned(), mode));
        Ok(())
    }

    pub(super) fn parent_of(&mut self, path: &str) -> io::Result<()> {
        match path.rsplit_once('/') {
            Some((parent, _)) => self.ensure(parent),
            None => Ok(()),
        }
    }

    fn ensure(&mut self, path: &str) -> io::Result<()> {
        if self.made.contains(path) {
            return Ok(());
        }
        self.parent_of(path)?;
        fs::create_dir(self.root.join(path))?;
        self.made.insert(path.to_owned());
        Ok(())
    }

    /// Syncs every directory of the release, the root last.
    pub(super) fn sync_all(&self) -> io::Result<()> {
        for path in &self.made {
            sync_dir(&self.root.join(path))?;
        }
        sync_dir(&self.root)
    }

    pub(super) fn apply_modes(&self) -> io::Result<()> {
        for (path, mode) in self.modes.iter().rev() {
            fs::set_permissions(self.root.join(path), fs::Permissions::from_mode(*mode))?;
        }
        Ok(())
    }
}

/// A small file waiting to be written: its path, mode and bytes.
type Job = (PathBuf, u32, Vec<u8>);

/// The writer thread for small files, as rustup's `diskio` has: decoding goes on while
/// the kernel takes the writes. One thread, not several: on ext4, four cost about 1 s
/// more system time per 30,000 files (the same directories and journal, contended) and
/// 10 % of a deploy; on tmpfs one is as fast (docs/BENCHMARKS.md).
struct Writer {
    jobs: SyncSender<Vec<Job>>,
    batch: Vec<Job>,
    batch_bytes: usize,
    /// Answers the first failed write, with the file's path; it stops there.
    thread: JoinHandle<io::Result<()>>,
    failed: Arc<AtomicBool>,
}

impl Writer {
    /// `per_file`: fsync each file after writing it.
    fn start(per_file: bool) -> Self {
        let (sender, receiver) = sync_channel::<Vec<Job>>(QUEUE);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::spawn(move || {
            for (path, mode, data) in receiver.into_iter().flatten() {
                let written = create(&path, mode).and_then(|mut file| {
                    file.write_all(&data)?;
                    if per_file { file.sync_all() } else { Ok(()) }
                });
                if let Err(err) = written {
                    flag.store(true, Ordering::Relaxed);
                    return Err(io::Error::new(err.kind(), format!("{}: {err}", path.display())));
                }
            }
            Ok(())
        });
        Self {
            jobs: sender,
            batch: Vec::with_capacity(BATCH_FILES),
            batch_bytes: 0,
            thread,
            failed,
        }
    }

    fn write(&mut self, path: PathBuf, mode: u32, data: Vec<u8>) -> io::Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other("a file write failed"));
        }
        self.batch_bytes += data.len();
        self.batch.push((path, mode, data));
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_FILES));
        self.batch_bytes = 0;
        self.jobs
            .send(batch)
            .map_err(|_| io::Error::other("the writer thread stopped"))
    }

    /// Writes what is still batched and waits for every write; the first error, if any.
    fn finish(mut self) -> io::Result<()> {
        let sent = if self.batch.is_empty() {
            Ok(())
        } else {
            self.send()
        };
        drop(self.jobs);
        let written = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        written.and(sent)
    }
}
