//! Files written whole or not at all: the state dir's records, the reports kept on the
//! instance, the trust ledger, the secrets marker and the fleet page all go through
//! [`write_atomic`]. Files read beneath a folder without following a link anywhere on
//! the way ([`open_beneath`]). The ground floor: imports nothing of the crate.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` at `path`: into a new file of mode `mode` (less the umask) beside it,
/// named `.<name>.tmp-<random>`, synced, renamed over `path`, then the directory
/// synced. A reader sees the old content or the new, never a part, and so does
/// whoever looks after a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Syncs a directory's entries to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens `rel` (names joined by `/`) under `root` for reading, each step with
/// `O_NOFOLLOW`: a link anywhere on the way, or at the end, is refused (so is the root
/// itself being one), and so is anything but a regular file at the end. `O_NONBLOCK`
/// keeps a FIFO planted there from holding the open for ever.
pub fn open_beneath(root: &Path, rel: &str) -> io::Result<File> {
    Beneath::new(root)?.open(rel)
}

/// Files read beneath one folder, as [`open_beneath`] opens them, with the folders on
/// the way kept open (a few at a time) for the next file: one `openat` a file when
/// files come in path order.
pub struct Beneath {
    root: OwnedFd,
    /// Folders opened, by their path under the root.
    folders: std::collections::HashMap<String, OwnedFd>,
}

/// Folders kept open by one [`Beneath`]: a bound well under the usual 1,024 descriptors
/// a process may have, with several at work.
const KEPT_FOLDERS: usize = 32;

impl Beneath {
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = CString::new(root.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path; the result is checked before use.
        let root = owned(unsafe { libc::open(root.as_ptr(), FOLDER) })?;
        Ok(Self {
            root,
            folders: std::collections::HashMap::new(),
        })
    }

    /// Opens the regular file `rel` for reading.
    pub fn open(&mut self, rel: &str) -> io::Result<File> {
        let (folder, name) = self.split(rel)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let file = File::from(owned(unsafe { libc::openat(folder, name.as_ptr(), flags) })?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        // A regular file reads the same with O_NONBLOCK set, but the flag is not kept.
        // SAFETY: a valid descriptor; F_SETFL with plain flags.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) };
        Ok(file)
    }

    /// A hard link at `to` to the file `rel`, never to what a link there points at.
    pub fn link(&mut self, rel: &str, to: &Path) -> io::Result<()> {
        let (folder, name) = self.split(rel)?;
        let to = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: a valid folder descriptor and NUL-terminated names; flags 0 links the
        // name itself.
        if unsafe { libc::linkat(folder, name.as_ptr(), libc::AT_FDCWD, to.as_ptr(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The folder `rel` is in, opened, and its last name.
    fn split(&mut self, rel: &str) -> io::Result<(libc::c_int, CString)> {
        let invalid = || io::Error::other(format!("{rel:?}: not a path beneath its folder"));
        if rel
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\0'))
        {
            return Err(invalid());
        }
        let (folder, name) = match rel.rsplit_once('/') {
            Some((folder, name)) => (self.folder(folder)?, name),
            None => (self.root.as_raw_fd(), rel),
        };
        Ok((folder, CString::new(name).map_err(io::Error::other)?))
    }

    /// The folder at `path` under the root, opened step by step without following a
    /// link, or kept from before.
    fn folder(&mut self, path: &str) -> io::Result<libc::c_int> {
        if let Some(fd) = self.folders.get(path) {
            return Ok(fd.as_raw_fd());
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (self.folder(parent)?, name),
            None => (self.root.as_raw_fd(), path),
        };
        let name = CString::new(name).map_err(io::Error::other)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = owned(unsafe { libc::openat(parent, name.as_ptr(), FOLDER) })?;
        if self.folders.len() >= KEPT_FOLDERS {
            // Its parents were just opened: keep the last ones, drop the rest.
            let keep: Vec<String> = ancestors(path).map(str::to_owned).collect();
            self.folders.retain(|k, _| keep.contains(k));
        }
        let raw = fd.as_raw_fd();
        self.folders.insert(path.to_owned(), fd);
        Ok(raw)
    }
}

/// `a/b/c`'s folders from the root: `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(at, _)| &path[..at])
}

const FOLDER: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// A descriptor from a call that returns one, or its error.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_beneath_refuses_links_anywhere_and_anything_but_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("release");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "yes").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open_beneath(&root, "a/b/f").unwrap(), &mut text).unwrap();
        assert_eq!(text, "yes");
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/f"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("a/link")).unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/f")).unwrap();
        assert!(
            open_beneath(&root, "a/link/f").is_err(),
            "a folder on the way is a link"
        );
        assert!(open_beneath(&root, "a/f").is_err(), "the file is a link");
        assert!(open_beneath(&root, "a/b").is_err(), "a folder");
        assert!(open_beneath(&root, "a/../a/b/f").is_err());
        assert!(open_beneath(&root, "").is_err());
        std::os::unix::fs::symlink(&root, dir.path().join("root-link")).unwrap();
        assert!(
            open_beneath(&dir.path().join("root-link"), "a/b/f").is_err(),
            "the root is a link"
        );
        let fifo = CString::new(root.join("a/fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(
            open_beneath(&root, "a/fifo").is_err(),
            "a FIFO is refused, without waiting"
        );
    }

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_nothing_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        assert_eq!(mode & 0o133, 0, "never more than asked: {mode:o}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
    }
}
