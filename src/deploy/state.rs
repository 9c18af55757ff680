//! The instance's state dir (DESIGN §5):
//!
//! ```text
//! releases/<tag>/        complete, verified releases only: the pushed tree, nothing added
//! marks/<tag>.json       the mark of one (its tag, archive sha256 and index sha256):
//!                        written last, after the release is renamed into place
//! indexes/<tag>.json.zst its file index (DESIGN §6.9), when its manifest named one:
//!                        what a delta pack from it is checked against
//! releases/.staging-*    in progress; removed at the start of every deploy
//! current -> releases/<tag>
//! previous -> releases/<tag>   what `current` named before the last switch
//! good -> releases/<tag>       the last release whose init and health check passed
//! failed.json            the (tag, pointer serial) that failed and was rolled back
//! lock                   flock, with the holder's pid inside
//! ```
//!
//! Every switch is a rename of a fresh symlink over the old one, then a sync of the
//! directory, so a kill at any moment leaves `current` naming a complete release. Only
//! a directory with a mark naming its own tag counts as a release: an empty directory,
//! a symlink or a stray file under `releases/` is never trusted. The marks live beside
//! the releases, so a release's tree is exactly the tree that was pushed.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::index::{self, Index};
use crate::archive::policy::Limits;
use crate::files::{sync_dir, write_atomic};

/// Where older bootlace kept a release's mark, inside it: read once, to move it out.
const LEGACY_MARK: &str = ".bootlace-release.json";
const MARKS: &str = "marks";
const INDEXES: &str = "indexes";

const RELEASES: &str = "releases";
const STAGING: &str = ".staging-";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";
const GOOD: &str = "good";
const FAILED: &str = "failed.json";
const INIT: &str = "init.json";
/// A mark is a few hundred bytes; anything larger is not one.
const MARKER_CAP: u64 = 4 << 10;

/// A target that failed and was rolled back: not tried again until the pointer's
/// serial changes (a new promote is an explicit retry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub tag: String,
    pub serial: u64,
    pub reason: String,
    pub at: String,
}

/// The last init started (DESIGN §5): which release's, its process group while it
/// runs, and whether it was seen to finish. A restarted agent ends an orphaned group and
/// runs init again where it did not finish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRecord {
    pub tag: String,
    /// The script's process group, while it runs.
    pub group: Option<u32>,
    /// The boot it ran in: a group recorded under another boot is long gone.
    pub boot_id: String,
    pub finished: bool,
}

/// What a complete release's mark says.
#[derive(Debug, Serialize, Deserialize)]
struct Mark {
    tag: String,
    sha256: String,
    /// The sha256 of the index kept beside it, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<String>,
}

pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (and creates) the state dir.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join(RELEASES))?;
        let state = Self::at(root);
        if !root.join(MARKS).is_dir() {
            state.move_legacy_marks()?;
        }
        Ok(state)
    }

    /// A state dir of an older bootlace kept each mark inside its release: they move
    /// to `marks/` (the old file is left, unread from now on).
    fn move_legacy_marks(&self) -> io::Result<()> {
        let marks = self.root.join(MARKS);
        let temp = self.root.join(format!(".{MARKS}.{:016x}", fastrand::u64(..)));
        fs::create_dir_all(&temp)?;
        for entry in fs::read_dir(self.root.join(RELEASES))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let mut text = Vec::new();
            let read = File::open(entry.path().join(LEGACY_MARK))
                .and_then(|f| f.take(MARKER_CAP).read_to_end(&mut text));
            if read.is_ok() && serde_json::from_slice::<Mark>(&text).is_ok_and(|m| m.tag == name) {
                fs::write(temp.join(format!("{name}.json")), &text)?;
            }
        }
        sync_dir(&temp)?;
        match fs::rename(&temp, &marks) {
            Ok(()) => sync_dir(&self.root),
            // Another command opening the same state dir moved them first.
            Err(_) if marks.is_dir() => remove_tree(&temp),
            Err(err) => {
                let _ = remove_tree(&temp);
                Err(err)
            }
        }
    }

    fn mark_path(&self, tag: &str) -> PathBuf {
        self.root.join(MARKS).join(format!("{tag}.json"))
    }

    fn index_path(&self, tag: &str) -> PathBuf {
        self.root.join(INDEXES).join(format!("{tag}.json.zst"))
    }

    /// The state dir at `root`, for looking only: nothing is created.
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn release(&self, tag: &str) -> PathBuf {
        self.root.join(RELEASES).join(tag)
    }

    /// The sha256 of release `tag` if it is complete and verified here: a real
    /// directory (not a symlink) holding a mark that names it.
    fn verified(&self, tag: &str) -> Option<String> {
        self.mark(tag).map(|mark| mark.sha256)
    }

    fn mark(&self, tag: &str) -> Option<Mark> {
        let dir = self.release(tag);
        if crate::release::check_tag(tag).is_err() || !fs::symlink_metadata(&dir).ok()?.is_dir() {
            return None;
        }
        let mut text = Vec::new();
        File::open(self.mark_path(tag))
            .ok()?
            .take(MARKER_CAP)
            .read_to_end(&mut text)
            .ok()?;
        let mark: Mark = serde_json::from_slice(&text).ok()?;
        (mark.tag == tag).then_some(mark)
    }

    /// The file index kept for release `tag`: `Ok(None)` when it has none (deployed
    /// from a manifest without one, or by an older bootlace); an error when the one kept
    /// is not the one its mark names.
    pub fn index_of(&self, tag: &str, limits: Limits) -> Result<Option<Index>, String> {
        let Some(sha256) = self.mark(tag).and_then(|mark| mark.index) else {
            return Ok(None);
        };
        let path = self.index_path(tag);
        let mut stored = Vec::new();
        // Not through a link, and not a FIFO that would hold the read (and the lock).
        crate::files::open_beneath(&self.root, &format!("{INDEXES}/{tag}.json.zst"))
            .and_then(|f| f.take(index::MAX_STORED_BYTES + 1).read_to_end(&mut stored))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Index::from_stored(&stored, &sha256, limits)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The archive sha256 of release `tag`, if it is complete here.
    pub fn sha256_of(&self, tag: &str) -> Option<String> {
        self.verified(tag)
    }

    /// Whether `tag` is unpacked and verified here.
    pub fn has(&self, tag: &str) -> bool {
        self.verified(tag).is_some()
    }

    /// Whether `tag` is here with exactly the archive `sha256`.
    pub fn has_exactly(&self, tag: &str, sha256: &str) -> bool {
        self.verified(tag).is_some_and(|have| have == sha256)
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

    /// A new, empty staging dir, removed when dropped unless committed.
    pub fn staging(&self) -> io::Result<Staging> {
        let path = self
            .root
            .join(RELEASES)
            .join(format!("{STAGING}{:016x}", fastrand::u64(..)));
        fs::create_dir(&path)?;
        let staging = Staging { path: Some(path) };
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))?;
        Ok(staging)
    }

    /// Marks a complete, synced staging dir as release `tag` with archive `sha256` (and
    /// its file index, when known), and gives it its release name. Whatever held that
    /// name and was not a verified release (an empty directory, a stray file) is
    /// replaced.
    pub fn commit(
        &self,
        mut staging: Staging,
        tag: &str,
        sha256: &str,
        index: Option<&Index>,
    ) -> io::Result<()> {
        let mark = Mark {
            tag: tag.to_owned(),
            sha256: sha256.to_owned(),
            index: index.map(|index| index.digest().0),
        };
        sync_dir(staging.path())?;
        let target = self.release(tag);
        if [self.current(), self.previous()]
            .iter()
            .flatten()
            .any(|t| t == tag)
        {
            // Replacing it in place would leave a window where the release a link
            // names is half removed.
            return Err(io::Error::other(format!(
                "{} holds another build of {tag}, and current or previous names it; \
                 switch away from it (bootlace rollback) before deploying this one",
                target.display()
            )));
        }
        // The old mark goes first: from here until the new one is written, `tag` is
        // no release.
        self.unmark(tag)?;
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => remove_tree(&target)?,
            Ok(_) => fs::remove_file(&target)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        fs::rename(staging.path(), &target)?;
        staging.path = None;
        sync_dir(&self.root.join(RELEASES))?;
        if let Some(index) = index {
            fs::create_dir_all(self.root.join(INDEXES))?;
            write_atomic(&self.index_path(tag), &index.to_stored(), 0o600)?;
        }
        // Last: the mark, once every byte of the release is in place.
        let marks = self.root.join(MARKS);
        fs::create_dir_all(&marks)?;
        let bytes = serde_json::to_vec(&mark).expect("a mark always serialises");
        write_atomic(&self.mark_path(tag), &bytes, 0o600)
    }

    /// Removes `tag`'s mark (synced): it is no release from then on. Its index goes
    /// with it.
    fn unmark(&self, tag: &str) -> io::Result<()> {
        match fs::remove_file(self.mark_path(tag)) {
            Ok(()) => sync_dir(&self.root.join(MARKS))?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        match fs::remove_file(self.index_path(tag)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// The tag `current` names, if it names a complete release.
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

    /// The last release whose init and health check passed.
    pub fn good(&self) -> Option<String> {
        self.target(GOOD)
    }

    /// Records `tag` as good: it passed its init and health check.
    pub fn mark_good(&self, tag: &str) -> io::Result<()> {
        if self.good().as_deref() == Some(tag) {
            return Ok(());
        }
        self.point(GOOD, tag)?;
        sync_dir(&self.root)
    }

    /// The target that failed last, if any.
    pub fn failed(&self) -> Option<Failed> {
        self.read_record(FAILED)
    }

    /// Records a failed target, atomically.
    pub fn record_failed(&self, failed: &Failed) -> io::Result<()> {
        self.write_record(FAILED, failed)
    }

    /// The last init started, if one was recorded.
    pub fn init_record(&self) -> Option<InitRecord> {
        self.read_record(INIT)
    }

    /// Records the init that starts (or finished), atomically.
    pub fn record_init(&self, record: &InitRecord) -> io::Result<()> {
        self.write_record(INIT, record)
    }

    /// A small JSON record of the state dir; one that cannot be read is said, once per
    /// read, and taken as absent (a failed release is then tried again).
    fn read_record<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.root.join(name);
        let mut text = Vec::new();
        let read = File::open(&path).and_then(|file| file.take(MARKER_CAP + 1).read_to_end(&mut text));
        let why = match read {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => err.to_string(),
            Ok(_) if text.len() as u64 > MARKER_CAP => format!("over {MARKER_CAP} bytes"),
            Ok(_) => match serde_json::from_slice(&text) {
                Ok(record) => return Some(record),
                Err(err) => err.to_string(),
            },
        };
        tracing::warn!("ignoring {}: {why}", path.display());
        None
    }

    fn write_record<T: Serialize>(&self, name: &str, record: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).expect("a record always serialises");
        write_atomic(&self.root.join(name), &bytes, 0o600)
    }

    /// Switches back to `good` after the current release failed: `previous` becomes
    /// `previous` (what was previous before the failed switch, when it is still here and
    /// is neither), so that a plain `bootlace rollback` cannot switch to the release that
    /// just failed.
    pub fn roll_back_to(&self, good: &str, previous: Option<&str>) -> io::Result<()> {
        let failed = self.current();
        self.point(CURRENT, good)?;
        match previous.filter(|p| Some(*p) != failed.as_deref() && *p != good && self.has(p)) {
            Some(previous) => self.point(PREVIOUS, previous)?,
            None => match fs::remove_file(self.root.join(PREVIOUS)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            },
        }
        sync_dir(&self.root)
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

    /// Removes all but the newest `keep` releases, never `current`, `previous` or `good`.
    /// What is not a release (a stray file, an unmarked directory) is left alone and
    /// named once in the log.
    pub fn prune(&self, keep: usize) -> io::Result<Vec<String>> {
        let protected = [self.current(), self.previous(), self.good()];
        let mut releases = Vec::new();
        let mut strays = Vec::new();
        for entry in fs::read_dir(self.root.join(RELEASES))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || protected.iter().flatten().any(|p| *p == name) {
                continue;
            }
            if !self.has(&name) {
                strays.push(name);
                continue;
            }
            let modified = entry.metadata()?.modified()?;
            releases.push((modified, name));
        }
        if !strays.is_empty() {
            strays.sort();
            tracing::warn!(
                "{}: leaving {} entries that are not complete releases: {}",
                self.root.join(RELEASES).display(),
                strays.len(),
                strays.join(", ")
            );
        }
        releases.sort_by(|a, b| b.cmp(a));
        let mut pruned = Vec::new();
        for (_, name) in releases.into_iter().skip(keep) {
            self.unmark(&name)?;
            remove_tree(&self.release(&name))?;
            pruned.push(name);
        }
        Ok(pruned)
    }
}

/// A staging dir in progress: removed when dropped, on every path but a commit.
pub struct Staging {
    path: Option<PathBuf>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("a staging dir until committed")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(err) = remove_tree(&path)
        {
            tracing::warn!("removing {}: {err}", path.display());
        }
    }
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
        fs::write(staging.path().join("f"), tag).unwrap();
        state.commit(staging, tag, &"ab".repeat(32), None).unwrap();
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
        let path = staging.path().to_owned();
        std::mem::forget(staging);
        fs::create_dir(path.join("ro")).unwrap();
        fs::write(path.join("ro/f"), "x").unwrap();
        fs::set_permissions(path.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        state.clear_staging().unwrap();
        assert!(!path.exists());
    }
}
