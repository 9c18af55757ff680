//! The state dir's locks: `lock`, which one command at a time holds while it changes
//! the state dir (waiting a bounded time, and naming the holder), and `agent.lock`,
//! which keeps a second agent off the same state dir.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::state::StateDir;

const LOCK: &str = "lock";
/// How often a busy lock is tried again.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// The state dir's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("taking the state dir lock {path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("the state dir lock {path} is held by {holder}; gave up after {waited} (deploy.lock_timeout)")]
    Busy {
        path: String,
        holder: String,
        waited: String,
    },
    #[error("another agent runs on this state dir ({holder} holds {path}); one agent per state dir")]
    AgentRunning { path: String, holder: String },
}

impl StateDir {
    /// Takes the state dir's lock, waiting at most `timeout` for a holder to finish
    /// and saying at once who holds it. Held until the file is dropped; the holder's
    /// pid is written inside for the next one to name.
    pub fn lock(&self, timeout: Duration) -> Result<File, LockError> {
        let (path, mut file) = self.lock_file(LOCK)?;
        if !try_lock(&file).map_err(|e| io_error(&path, e))? {
            let holder = holder(&mut file);
            tracing::warn!(
                "waiting up to {} for the state dir lock {}, held by {holder}",
                humantime::format_duration(timeout),
                path.display()
            );
            let deadline = Instant::now() + timeout;
            while !try_lock(&file).map_err(|e| io_error(&path, e))? {
                if Instant::now() >= deadline {
                    return Err(LockError::Busy {
                        path: path.display().to_string(),
                        holder,
                        waited: humantime::format_duration(timeout).to_string(),
                    });
                }
                std::thread::sleep(LOCK_POLL.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
        claim(&path, file)
    }

    /// Takes the agent's own lock (`agent.lock`) for as long as the file is held: one
    /// agent per state dir. A second is refused at once, naming the first.
    pub fn agent_lock(&self) -> Result<File, LockError> {
        let (path, mut file) = self.lock_file("agent.lock")?;
        if !try_lock(&file).map_err(|e| io_error(&path, e))? {
            return Err(LockError::AgentRunning {
                path: path.display().to_string(),
                holder: holder(&mut file),
            });
        }
        claim(&path, file)
    }

    /// A lock file in the state dir, open.
    fn lock_file(&self, name: &str) -> Result<(PathBuf, File), LockError> {
        let path = self.root().join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok((path, file))
    }
}

/// Takes the lock without waiting; `false` when another process holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(err)) => Err(err),
    }
}

/// A lock just taken: its holder's pid written inside, for anyone who has to wait.
fn claim(path: &Path, file: File) -> Result<File, LockError> {
    file.set_len(0).map_err(|e| io_error(path, e))?;
    std::os::unix::fs::FileExt::write_all_at(&file, format!("{}\n", std::process::id()).as_bytes(), 0)
        .map_err(|e| io_error(path, e))?;
    Ok(file)
}

fn io_error(path: &Path, error: io::Error) -> LockError {
    LockError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Who holds the lock: the process the kernel says holds it (`/proc/locks`), with its
/// name; only where the kernel does not say, the pid last written into the file (which
/// may be a process long gone: whoever takes the lock by hand writes nothing there).
fn holder(file: &mut File) -> String {
    if let Some(pid) = file.metadata().ok().and_then(|meta| flock_holder(&meta)) {
        let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return match name.trim() {
            "" => format!("pid {pid}"),
            name => format!("pid {pid} ({})", crate::text::printable(name, 32)),
        };
    }
    let mut text = String::new();
    let _ = file.take(64).read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}, as the lock file says"),
        Err(_) => "another process".into(),
    }
}

/// The pid holding a `flock` on the file `meta` describes, from `/proc/locks`
/// (`1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`, device numbers in hex).
fn flock_holder(meta: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut id = fields.get(5)?.split(':');
        let (maj, min, ino) = (id.next()?, id.next()?, id.next()?);
        let same = u32::from_str_radix(maj, 16).ok()? == major
            && u32::from_str_radix(min, 16).ok()? == minor
            && ino.parse::<u64>().ok()? == meta.ino();
        same.then(|| fields.get(4)?.parse().ok()).flatten()
    })
}
