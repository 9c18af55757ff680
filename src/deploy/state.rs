//! The instance's state dir (DESIGN §5):
//!
//! ```text
//! releases/<tag>/        complete, verified releases only
//! releases/.staging-*    in progress; removed at the start of every deploy
//! current -> releases/<tag>
//! previous -> releases/<tag>   what `current` named before the last switch
//! lock
//! ```
//!
//! Every switch is a rename of a fresh symlink over the old one, then a sync of the
//! directory, so a kill at any moment leaves `current` naming a complete release.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

const RELEASES: &str = "releases";
const STAGING: &str = ".staging-";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";

pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (and creates) the state dir.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join(RELEASES))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the state dir's lock, waiting for a holder to finish. Held until the file
    /// is dropped.
    pub fn lock(&self) -> io::Result<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        file.lock()?;
        Ok(file)
    }

    pub fn release(&self, tag: &str) -> PathBuf {
        self.root.join(RELEASES).join(tag)
    }

    /// Whether `tag` is unpacked and verified here. Only verified releases ever get a
    /// `releases/<tag>` name, so its presence is the proof.
    pub fn has(&self, tag: &str) -> bool {
        self.release(tag).is_dir()
    }

    /// Removes what an interrupted deploy left.
    pub fn clear_staging(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.root.join(RELEASES))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(STAGING) {
                tracing::info!("removing the unfinished {}", entry.path().display());
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    /// A new, empty staging dir.
    pub fn staging(&self) -> io::Result<PathBuf> {
        let path = self
            .root
            .join(RELEASES)
            .join(format!("{STAGING}{:016x}", fastrand::u64(..)));
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    /// Gives a complete, synced staging dir its release name.
    pub fn commit(&self, staging: &Path, tag: &str) -> io::Result<()> {
        fs::rename(staging, self.release(tag))?;
        sync_dir(&self.root.join(RELEASES))
    }

    /// The tag `current` names.
    pub fn current(&self) -> Option<String> {
        self.target(CURRENT)
    }

    /// The tag `current` named before the last switch.
    pub fn previous(&self) -> Option<String> {
        self.target(PREVIOUS)
    }

    fn target(&self, link: &str) -> Option<String> {
        let target = fs::read_link(self.root.join(link)).ok()?;
        let tag = target.strip_prefix(RELEASES).ok()?.to_str()?.to_owned();
        self.has(&tag).then_some(tag)
    }

    /// Makes `tag` current; what was current becomes previous.
    pub fn activate(&self, tag: &str) -> io::Result<()> {
        let old = self.current();
        if old.as_deref() == Some(tag) {
            return Ok(());
        }
        if let Some(old) = &old {
            self.point(PREVIOUS, old)?;
        }
        self.point(CURRENT, tag)?;
        sync_dir(&self.root)
    }

    /// Points `link` at `releases/<tag>` by renaming a new symlink over it.
    fn point(&self, link: &str, tag: &str) -> io::Result<()> {
        let temp = self.root.join(format!(".{link}.{:016x}", fastrand::u64(..)));
        symlink(Path::new(RELEASES).join(tag), &temp)?;
        fs::rename(&temp, self.root.join(link)).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
    }

    /// Removes all but the newest `keep` releases, never `current` or `previous`.
    pub fn prune(&self, keep: usize) -> io::Result<Vec<String>> {
        let protected = [self.current(), self.previous()];
        let mut releases = Vec::new();
        for entry in fs::read_dir(self.root.join(RELEASES))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || protected.iter().flatten().any(|p| *p == name) {
                continue;
            }
            let modified = entry.metadata()?.modified()?;
            releases.push((modified, name));
        }
        releases.sort_by(|a, b| b.cmp(a));
        let mut pruned = Vec::new();
        for (_, name) in releases.into_iter().skip(keep) {
            remove_tree(&self.release(&name))?;
            pruned.push(name);
        }
        Ok(pruned)
    }
}

/// Syncs a directory's entries to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a tree, first making its directories writable where needed (a release may
/// hold directories without write permission).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(meta.permissions().mode() | 0o700))?;
    for entry in fs::read_dir(dir)? {
        make_writable(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(state: &StateDir, tag: &str) {
        let staging = state.staging().unwrap();
        fs::write(staging.join("f"), tag).unwrap();
        state.commit(&staging, tag).unwrap();
    }

    #[test]
    fn activate_keeps_previous_and_prune_spares_both() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.current(), None);
        for tag in ["v1", "v2", "v3", "v4", "v5"] {
            release(&state, tag);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        state.activate("v1").unwrap();
        state.activate("v2").unwrap();
        assert_eq!(state.current().as_deref(), Some("v2"));
        assert_eq!(state.previous().as_deref(), Some("v1"));
        let mut pruned = state.prune(1).unwrap();
        pruned.sort();
        // v5 is the newest other release; v1 and v2 are protected.
        assert_eq!(pruned, ["v3", "v4"]);
        assert!(state.has("v1") && state.has("v2") && state.has("v5"));
    }

    #[test]
    fn staging_leftovers_are_cleared_even_without_write_permission() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let staging = state.staging().unwrap();
        fs::create_dir(staging.join("ro")).unwrap();
        fs::write(staging.join("ro/f"), "x").unwrap();
        fs::set_permissions(staging.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        state.clear_staging().unwrap();
        assert!(!staging.exists());
    }
}
