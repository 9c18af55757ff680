//! Deterministic packaging: the same tree always gives the same tar.zst bytes. Entries
//! in sorted order, owner 0:0 with no names, one mtime for all (`SOURCE_DATE_EPOCH`, or
//! 2000-01-01), permission bits kept; symlinks stored as symlinks, and refused when
//! absolute or leading outside the tree.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::Hashing;
use super::index::Index;
use super::policy::{Checked, Checker, Limits, PolicyError, Totals};

/// The mtime of every entry when `SOURCE_DATE_EPOCH` is not set: 2000-01-01T00:00:00Z.
pub const DEFAULT_MTIME: u64 = 946_684_800;
/// zstd level 3: zstd's default, fast enough to pack at disk speed.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}: {kind} cannot go into a release")]
    Special { path: PathBuf, kind: &'static str },
    #[error("{path}: file changed while it was packed")]
    Changed { path: PathBuf },
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    BadEpoch(String),
}

/// The mtime to stamp on every entry.
pub fn mtime_from_env() -> Result<u64, PackError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.trim().parse().map_err(|_| PackError::BadEpoch(value)),
        Err(_) => Ok(DEFAULT_MTIME),
    }
}

/// Packs the tree at `root` as tar.zst into `out`, and gives its file index. The tree
/// is checked against the unpack policy as it is packed, so what is pushed will deploy.
pub fn pack_dir<W: Write>(
    root: &Path,
    mtime: u64,
    limits: Limits,
    out: W,
) -> Result<(W, Totals, Index), PackError> {
    let encoder = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(|e| io_error(root, e))?;
    let mut packer = Packer {
        root,
        mtime,
        builder: tar::Builder::new(encoder),
        checker: Checker::new(limits),
        index: Index::default(),
    };
    packer.walk(Path::new(""))?;
    let totals = packer.checker.finish()?;
    let encoder = packer.builder.into_inner().map_err(|e| io_error(root, e))?;
    let out = encoder.finish().map_err(|e| io_error(root, e))?;
    Ok((out, totals, packer.index.finish()))
}

struct Packer<'a, W: Write> {
    root: &'a Path,
    mtime: u64,
    builder: tar::Builder<zstd::Encoder<'static, W>>,
    checker: Checker,
    index: Index,
}

impl<W: Write> Packer<'_, W> {
    /// Appends the children of `dir` (relative to the root), sorted by name bytes.
    fn walk(&mut self, dir: &Path) -> Result<(), PackError> {
        let full = self.root.join(dir);
        let mut names: Vec<_> = fs::read_dir(&full)
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(|e| io_error(&full, e))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let relative = dir.join(&name);
            let path = self.root.join(&relative);
            let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
            let file_type = meta.file_type();
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            if file_type.is_dir() {
                let checked = self.append(&relative, &meta, tar::EntryType::Directory, io::empty(), None)?;
                self.index.add(&checked, mode, None, None);
                self.walk(&relative)?;
            } else if file_type.is_file() {
                let file = File::open(&path).map_err(|e| io_error(&path, e))?;
                let mut exact = Hashing::new(Exact {
                    inner: file.take(meta.len()),
                    left: meta.len(),
                    path: &path,
                });
                let checked = self.append(&relative, &meta, tar::EntryType::Regular, &mut exact, None)?;
                let (_, sha256, size) = exact.finish();
                self.index.add(&checked, mode, Some((size, sha256)), None);
            } else if file_type.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| io_error(&path, e))?;
                let checked = self.append(
                    &relative,
                    &meta,
                    tar::EntryType::Symlink,
                    io::empty(),
                    Some(&target),
                )?;
                // The policy took the target as UTF-8.
                let text = target.to_string_lossy().into_owned();
                self.index.add(&checked, mode, None, Some(text));
            } else {
                return Err(PackError::Special {
                    path,
                    kind: special_kind(&file_type),
                });
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        relative: &Path,
        meta: &fs::Metadata,
        entry_type: tar::EntryType,
        data: impl Read,
        link: Option<&Path>,
    ) -> Result<Checked, PackError> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;

        let size = if entry_type == tar::EntryType::Regular {
            meta.len()
        } else {
            0
        };
        let link_bytes = link.map(|l| l.as_os_str().as_bytes());
        let checked = self
            .checker
            .check(relative.as_os_str().as_bytes(), entry_type, size, link_bytes)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_size(size);
        header.set_mode(meta.permissions().mode() & 0o777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        let path = self.root.join(relative);
        let result = match link {
            Some(target) => self.builder.append_link(&mut header, relative, target),
            None => self.builder.append_data(&mut header, relative, data),
        };
        result.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => PackError::Changed { path },
            _ => io_error(&path, e),
        })?;
        Ok(checked)
    }
}

/// A file's bytes, exactly as many as its header promised: a file that shrank while
/// being packed is an error rather than a corrupt archive. (Growth is cut by `take`.)
struct Exact<'a, R> {
    inner: R,
    left: u64,
    path: &'a Path,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            let message = format!("{} shrank while being packed", self.path.display());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn special_kind(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

fn io_error(path: &Path, error: io::Error) -> PackError {
    PackError::Io {
        path: path.to_owned(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("bootstrap/b/prod")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bootstrap/b/prod/bootstrapper.sh"), b"echo prod\n").unwrap();
        fs::write(root.join("README"), b"hello").unwrap();
        symlink("bin/app", root.join("app")).unwrap();
        dir
    }

    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType, u32, u64)> {
        let mut tar = tar::Archive::new(zstd::Decoder::new(archive).unwrap());
        tar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                (path, h.entry_type(), h.mode().unwrap(), h.mtime().unwrap())
            })
            .collect()
    }

    #[test]
    fn same_tree_same_bytes_sorted_with_modes() {
        let dir = tree();
        let (first, totals, index) =
            pack_dir(dir.path(), DEFAULT_MTIME, Limits::default(), Vec::new()).unwrap();
        // Touch everything: new mtimes must not change the archive.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(dir.path().join("README"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        let (second, _, again) = pack_dir(dir.path(), DEFAULT_MTIME, Limits::default(), Vec::new()).unwrap();
        assert_eq!(first, second);
        assert_eq!(index, again);
        assert_eq!(
            totals,
            Totals {
                files: 3,
                unpacked_bytes: 18 + 10 + 5
            }
        );
        let listed = entries(&first);
        let paths: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "README",
                "app",
                "bin",
                "bin/app",
                "bootstrap",
                "bootstrap/b",
                "bootstrap/b/prod",
                "bootstrap/b/prod/bootstrapper.sh",
                "empty"
            ]
        );
        let app = listed.iter().find(|e| e.0 == "bin/app").unwrap();
        assert_eq!(app.2, 0o755);
        assert!(listed.iter().all(|e| e.3 == DEFAULT_MTIME));
        assert_eq!(listed[1].1, tar::EntryType::Symlink);

        // The index lists the same paths in the same order, with what each one holds.
        let indexed: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(indexed, paths);
        let app = index.entries.iter().find(|e| e.path == "bin/app").unwrap();
        use sha2::Digest;
        let body = b"#!/bin/sh\necho hi\n";
        assert_eq!(
            app.sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(body)).as_str())
        );
        assert_eq!((app.size, app.mode), (Some(body.len() as u64), 0o755));
        assert_eq!(index.entries[1].target.as_deref(), Some("bin/app"));
        index.check(Limits::default()).unwrap();
    }

    #[test]
    fn refuses_absolute_and_escaping_symlinks_naming_them() {
        let dir = tree();
        symlink("/etc/passwd", dir.path().join("bin/passwd")).unwrap();
        let err = pack_dir(dir.path(), DEFAULT_MTIME, Limits::default(), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bin/passwd") && err.contains("absolute"), "{err}");

        let dir = tree();
        symlink("../../outside", dir.path().join("bin/out")).unwrap();
        let err = pack_dir(dir.path(), DEFAULT_MTIME, Limits::default(), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bin/out") && err.contains("outside the release"),
            "{err}"
        );
    }

    #[test]
    fn refuses_fifos() {
        let dir = tree();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let err = pack_dir(dir.path(), DEFAULT_MTIME, Limits::default(), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipe") && err.contains("FIFO"), "{err}");
    }
}
