//! The secrets dir: a directory of bootlace's own on tmpfs (or ramfs), 0700, marked
//! as bootlace's by a file that names what it wrote; each value written whole (0400)
//! by rename, and only what bootlace wrote ever removed.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use secrecy::ExposeSecret;

use super::{Config, Fetched};
use crate::error::BadInput;

/// The file that marks `secrets.dir` as bootlace's, naming the secrets it wrote there:
/// only a directory bootlace made (or found empty) is managed, and in it only what it
/// wrote is ever removed.
pub(super) const MARKER: &str = ".bootlace-secrets";

/// Writes every value to `dir/<name>` (0400) by rename, so that a reader sees the old
/// value or the new one, never a part; makes `dir` 0700; removes the files of names
/// bootlace wrote there before and no longer configured (and temporary files a crash
/// left). Nothing else in `dir` is touched.
pub fn write(config: &Config, fetched: &Fetched) -> anyhow::Result<()> {
    let dir = &config.dir;
    prepare_dir(config)?;
    let on_disk = !config.require_tmpfs && !is_memory(dir)?;
    // Named in the marker before they exist: a crash between the two leaves nothing
    // unaccounted for.
    let mut names = written_names(dir);
    names.extend(fetched.secrets.iter().map(|s| s.name.clone()));
    record_names(dir, &names)?;
    for secret in &fetched.secrets {
        let path = dir.join(&secret.name);
        let temporary = dir.join(format!(".{}.tmp-{}", secret.name, std::process::id()));
        let written = (|| {
            let _ = std::fs::remove_file(&temporary);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temporary)?;
            file.write_all(secret.value.expose_secret())?;
            if on_disk {
                file.sync_all()?;
            }
            std::fs::rename(&temporary, &path)
        })();
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            anyhow::bail!("writing secret {} to {}: {err}", secret.name, path.display());
        }
    }
    remove_stale(config)
}

/// With no items configured: the files an earlier config left in `dir` are removed,
/// when it is bootlace's.
pub fn clear(config: &Config) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(config.dir.join(MARKER)) {
        Ok(meta) if meta.is_file() => remove_stale(config),
        _ => Ok(()),
    }
}

/// The names bootlace wrote in `dir`, as its marker lists them.
fn written_names(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read(dir.join(MARKER))
        .ok()
        .filter(|bytes| bytes.len() < 1 << 20)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn record_names(dir: &Path, names: &std::collections::BTreeSet<String>) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(names).expect("names always serialise");
    crate::files::write_atomic(&dir.join(MARKER), &bytes, 0o600)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", dir.join(MARKER).display()))
}

/// Removes what bootlace wrote in `dir` and no longer configures: the names its marker
/// lists, and its own temporary files. Other files are never touched.
fn remove_stale(config: &Config) -> anyhow::Result<()> {
    let dir = &config.dir;
    let configured: std::collections::BTreeSet<String> = config.items.keys().map(|n| n.0.clone()).collect();
    let written = written_names(dir);
    for name in written.difference(&configured) {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                std::fs::remove_file(&path)
                    .map_err(|e| anyhow::anyhow!("removing stale secret {}: {e}", path.display()))?;
                tracing::info!("removed secret {name}: no longer configured");
            }
            _ => {}
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = written
            .iter()
            .chain(&configured)
            .any(|n| name.starts_with(&format!(".{n}.tmp-")))
            || name.starts_with(&format!(".{MARKER}.tmp-"))
            || name.starts_with(&format!("{MARKER}.tmp-"));
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let kept: std::collections::BTreeSet<String> = written.intersection(&configured).cloned().collect();
    record_names(dir, &kept)
}

/// Creates `dir` (0700) when missing and marks it as bootlace's; refuses a dir that
/// holds anything but what bootlace wrote (a shared `/run`, say), one not on tmpfs or
/// ramfs (unless `require_tmpfs = false`), or one owned by another user; makes it 0700.
fn prepare_dir(config: &Config) -> anyhow::Result<()> {
    let dir = &config.dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating secrets dir {}: {e}", dir.display()))?;
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| anyhow::anyhow!("secrets dir {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(BadInput(format!("secrets.dir {}: not a directory", dir.display())).into());
    }
    // Whoever owns the dir could replace a file before init reads it.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if std::os::unix::fs::MetadataExt::uid(&meta) != euid {
        return Err(BadInput(format!(
            "secrets.dir {}: owned by uid {}, not by the user bootlace runs as ({euid})",
            dir.display(),
            std::os::unix::fs::MetadataExt::uid(&meta)
        ))
        .into());
    }
    if config.require_tmpfs && !is_memory(dir)? {
        return Err(BadInput(format!(
            "secrets.dir {}: not on tmpfs or ramfs, so secrets would outlive the machine on its disk \
             (use a directory of bootlace's own on a tmpfs, such as /run/bootlace/secrets, or set \
             secrets.require_tmpfs = false)",
            dir.display()
        ))
        .into());
    }
    if !dir.join(MARKER).is_file() {
        let mut entries =
            std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
        if entries.next().is_some() {
            return Err(BadInput(format!(
                "secrets.dir {}: it holds files bootlace did not write; bootlace manages only a directory \
                 of its own (such as /run/bootlace/secrets), which it creates",
                dir.display()
            ))
            .into());
        }
        record_names(dir, &Default::default())?;
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("making secrets dir {} 0700: {e}", dir.display()))?;
    }
    Ok(())
}

/// `secrets.dir` as `plan` shows it: the path, and whether a run would accept it.
pub fn dir_note(config: &Config) -> String {
    let dir = &config.dir;
    // A dir not made yet is made on the filesystem of its nearest existing parent.
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let verdict = match (is_memory(existing), config.require_tmpfs) {
        (Ok(true), _) => "tmpfs",
        (Ok(false), true) => "not on tmpfs: a run would refuse it",
        (Ok(false), false) => "on disk, allowed by secrets.require_tmpfs = false",
        (Err(_), _) => "unreadable",
    };
    format!("{} ({verdict})", dir.display())
}

/// Whether `path` is on a filesystem held in memory only (tmpfs, ramfs).
pub fn is_memory(path: &Path) -> anyhow::Result<bool> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6_u32 as i64;
    let text = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| BadInput(format!("secrets.dir {}: holds a NUL byte", path.display())))?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer of the right size.
    if unsafe { libc::statfs(text.as_ptr(), &mut stat) } != 0 {
        let err = std::io::Error::last_os_error();
        anyhow::bail!("secrets dir {}: {err}", path.display());
    }
    // `f_type` is a signed word whose width varies by architecture.
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.f_type as i64 & 0xffff_ffff;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}
