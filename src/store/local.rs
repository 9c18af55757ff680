//! A `file://` store's listing and deletes, without following links. object_store's
//! local store follows symbolic links as it walks, so a link planted under `reports/`
//! (`reports/evil/web -> ../../builds`) would list, and let `fleet prune` delete,
//! manifests and pointers. Here a link is never entered, listed or deleted through.

use std::path::Path;
use std::time::SystemTime;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Listed, StoreError};

/// Entries sent from the walking thread at a time: the listing holds no more.
const BATCH: usize = 1000;

/// Every regular file under `root/dir`, at any depth, as keys relative to `root`.
/// Links are skipped (with a warning); a name that is not printable UTF-8 is listed
/// as `odd`, its key made printable, so one stray file cannot stop a listing.
pub fn list(root: &Path, dir: &str, url: String) -> BoxStream<'static, Result<Listed, StoreError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Listed, StoreError>>(BATCH);
    let (root, dir) = (root.to_owned(), dir.trim_end_matches('/').to_owned());
    tokio::task::spawn_blocking(move || {
        let start = root.join(&dir);
        match std::fs::symlink_metadata(&start) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Ok(meta) if !meta.is_dir() => return,
            _ => {}
        }
        if let Err(err) = walk(&start, &dir, &mut |listed| {
            sender.blocking_send(Ok(listed)).is_ok()
        }) {
            let _ = sender.blocking_send(Err(StoreError {
                refused: false,
                action: "listing",
                url: format!("{url}/{dir}/"),
                reason: err.to_string(),
            }));
        }
    });
    tokio_stream(receiver)
}

fn tokio_stream<T: Send + 'static>(receiver: tokio::sync::mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}

/// Walks `path` (the folder `key` names), depth first in name order, calling `found`
/// for each regular file until it returns false.
fn walk(path: &Path, key: &str, found: &mut dyn FnMut(Listed) -> bool) -> std::io::Result<bool> {
    let mut entries: Vec<(std::ffi::OsString, std::fs::FileType)> = std::fs::read_dir(path)?
        .map(|entry| entry.and_then(|e| Ok((e.file_name(), e.file_type()?))))
        .collect::<std::io::Result<_>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in entries {
        let (text, odd) = match name.to_str() {
            Some(text) if crate::text::is_printable(text) => (text.to_owned(), false),
            _ => (crate::text::printable(&name.to_string_lossy(), 200), true),
        };
        let child = path.join(&name);
        let child_key = format!("{key}/{text}");
        if kind.is_symlink() {
            tracing::warn!("skipping {}: a link, never followed in a store", child.display());
            continue;
        }
        if kind.is_dir() {
            if odd {
                tracing::warn!("skipping folder {child_key}: its name is not printable UTF-8");
                continue;
            }
            if !walk(&child, &child_key, found)? {
                return Ok(false);
            }
            continue;
        }
        // object_store's own temporary files (`name#3`) while it writes.
        if !kind.is_file() || is_partial(&text) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&child) else {
            continue;
        };
        let listed = Listed {
            key: child_key,
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            odd,
        };
        if !found(listed) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// object_store's local store writes `name#<digits>` and renames it into place.
fn is_partial(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes `key` under `root`, opening each folder on the way with `O_NOFOLLOW`: a
/// link anywhere on the path (planted, or swapped in meanwhile) refuses the delete, so
/// what is deleted lies under the store's own folders, never where a link leads.
/// A key already gone is no error.
pub fn delete(root: &Path, key: &str) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    let Some((file, folders)) = parts.split_last() else {
        return Err(std::io::Error::other(format!("{key:?}: not a key of the store")));
    };
    if parts.iter().any(|p| *p == "." || *p == ".." || p.contains('\0')) {
        return Err(std::io::Error::other(format!("{key:?}: not a key of the store")));
    }
    let c = |name: &str| std::ffi::CString::new(name.as_bytes()).map_err(std::io::Error::other);
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let root_c = std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path; the result is checked before use.
    let fd = unsafe { libc::open(root_c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened, owned from here on.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    for folder in folders {
        let name = c(folder)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(()),
                Some(libc::ELOOP | libc::ENOTDIR) => Err(std::io::Error::other(format!(
                    "{folder} in {key} is a link or not a folder; a store is never deleted from through a link"
                ))),
                _ => Err(err),
            };
        }
        // SAFETY: as above.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    let name = c(file)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name. unlinkat removes
    // a link itself, never what it points at.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(err);
        }
    }
    Ok(())
}

/// Refuses `key` when a folder on its way under `root` is a link (or not a folder): a
/// write through it would land outside the store. Folders not made yet are fine.
pub fn check_folders(root: &Path, key: &str) -> std::io::Result<()> {
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = root.to_owned();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        if *part == "." || *part == ".." {
            return Err(std::io::Error::other(format!("{key:?}: not a key of the store")));
        }
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is a link or not a folder; a store is never written through a link",
                    path.display()
                )));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        assert!(is_partial("a.json#12"));
        assert!(!is_partial("a.json#"));
        assert!(!is_partial("a#b"));
    }

    #[test]
    fn deletes_never_pass_through_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("builds")).unwrap();
        std::fs::write(dir.path().join("builds/v1.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join("reports/evil")).unwrap();
        std::os::unix::fs::symlink("../../builds", dir.path().join("reports/evil/web")).unwrap();
        assert!(delete(dir.path(), "reports/evil/web/v1.json").is_err());
        assert!(check_folders(dir.path(), "reports/evil/web/i-1.json").is_err());
        assert!(check_folders(dir.path(), "reports/new/web/i-1.json").is_ok());
        assert!(delete(dir.path(), "reports/../builds/v1.json").is_err());
        assert!(dir.path().join("builds/v1.json").exists());
        std::fs::create_dir_all(dir.path().join("reports/a/b")).unwrap();
        std::fs::write(dir.path().join("reports/a/b/c.json"), "{}").unwrap();
        delete(dir.path(), "reports/a/b/c.json").unwrap();
        assert!(!dir.path().join("reports/a/b/c.json").exists());
        delete(dir.path(), "reports/a/b/c.json").unwrap();
    }
}
