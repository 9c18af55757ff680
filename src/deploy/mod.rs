//! The instance's half (DESIGN §5): follow the pointer, fetch the build in one
//! streaming pass, unpack it safely, make it durable, and switch `current` to it
//! atomically — or leave everything as it was and say why.

pub mod delta;
pub mod fetch;
pub mod lock;
pub mod rebuild;
pub mod state;
pub mod unpack;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use serde::Deserialize;

use crate::archive::index::Index;
use crate::identity::Identity;
use crate::release::pointer::Checked;
use crate::release::rollout::Placement;
use crate::release::{Manifest, Pointer};
use crate::report::Arrival;
use crate::store::Store;
use crate::trust::Trust;
use delta::Attempt;
use fetch::Download;
use rebuild::{DeltaMode, Reuse};
use state::StateDir;
use unpack::SyncMode;

/// `[deploy]`: the state dir, the pointer, and the caps a release must stay within.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub state_dir: PathBuf,
    pub pointer: String,
    pub keep: u32,
    /// How archives are fetched: one stream, parallel ranges, or chosen per store.
    pub download: Download,
    /// Bytes of ranged parts in flight at once.
    #[serde(with = "crate::units::size")]
    pub download_window: u64,
    pub max_entries: u64,
    #[serde(with = "crate::units::size")]
    pub max_unpacked_bytes: u64,
    pub max_path_bytes: usize,
    /// How a new release is made durable before it is renamed into place.
    pub sync: SyncMode,
    /// Bytes a deploy leaves free on the state dir's filesystem.
    #[serde(with = "crate::units::size")]
    pub reserve: u64,
    /// The most one release's download and unpack may take, however steadily it
    /// progresses.
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// How long a command waits for another to release the state dir's lock.
    #[serde(with = "crate::units::duration")]
    pub lock_timeout: Duration,
    /// Whether an update may arrive as a delta pack (DESIGN §6.9).
    pub delta: DeltaMode,
    /// How a delta's unchanged files reach the new release.
    pub reuse: Reuse,
}

impl Default for Config {
    fn default() -> Self {
        let limits = crate::archive::policy::Limits::default();
        Self {
            state_dir: PathBuf::from("/var/lib/bootlace"),
            pointer: "{environment}".into(),
            keep: 5,
            download: Download::Auto,
            download_window: 64 << 20,
            max_entries: limits.max_entries,
            max_unpacked_bytes: limits.max_unpacked_bytes,
            max_path_bytes: limits.max_path_bytes,
            sync: SyncMode::Filesystem,
            reserve: 64 << 20,
            timeout: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(300),
            delta: DeltaMode::Auto,
            reuse: Reuse::Copy,
        }
    }
}

impl Config {
    /// The caps an archive must stay within.
    pub fn limits(&self) -> crate::archive::policy::Limits {
        crate::archive::policy::Limits {
            max_entries: self.max_entries,
            max_unpacked_bytes: self.max_unpacked_bytes,
            max_path_bytes: self.max_path_bytes,
        }
    }
}

/// What a deploy did.
#[derive(Debug, serde::Serialize)]
pub struct Deployed {
    pub tag: String,
    pub sha256: String,
    /// `false` when the release was already present.
    pub deployed: bool,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub pruned: Vec<String>,
    /// How the release arrived, when it was deployed now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival: Option<Arrival>,
}

/// What an instance should run: its pointer as it applies to this instance (the tag
/// it assigns in `tag`, `sha256` and `size`), and the manifest of that tag.
#[derive(Debug)]
pub struct Target {
    pub pointer: Pointer,
    pub manifest: Manifest,
    /// The instance's place in the pointer's rollout, when it has one.
    pub placement: Option<Placement>,
    /// Why the rollout's target was refused and the stable tag taken instead.
    pub refused: Option<String>,
}

/// A switch not made because the agent's hold file appeared: the release is fetched.
#[derive(Debug, thiserror::Error)]
#[error("held by {hold}: {tag} is fetched and is switched to once the file is gone")]
pub struct Held {
    pub hold: String,
    pub tag: String,
}

/// The release the identity's pointer assigns to this instance.
/// With `trust`, the pointer and manifest must pass its rules (DESIGN §6.5).
pub async fn target(
    config: &Config,
    identity: &Identity,
    store: &Store,
    trust: Option<&Trust>,
) -> anyhow::Result<Target> {
    let name = crate::release::pointer_name_for(&config.pointer, identity)?;
    let url = store.url_of(&crate::store::layout::pointer(&name));
    let pointer = match trust {
        Some(trust) => match trust.pointer(store, &name, None).await? {
            Checked::Changed(pointer, _) => Some(*pointer),
            Checked::Missing | Checked::NotModified => None,
        },
        None => Pointer::load(store, &name).await?,
    }
    .ok_or_else(|| anyhow::anyhow!("no pointer {url}: nothing to deploy"))?;
    assigned_target(store, &pointer, &identity.machine_id, &url, trust).await
}

/// The release `pointer` (read from `url`) assigns to `machine_id` now, with its
/// manifest. A rollout target whose manifest contradicts the pointer is refused: the
/// instance stays on the stable tag, and says why.
pub async fn assigned_target(
    store: &Store,
    pointer: &Pointer,
    machine_id: &str,
    url: &str,
    trust: Option<&Trust>,
) -> anyhow::Result<Target> {
    let assigned = pointer.assign(machine_id, crate::release::clock());
    let placement = assigned.placement.clone();
    let effective = pointer.applied(&assigned);
    match manifest_for(store, &effective, url, trust).await {
        Ok(manifest) => Ok(Target {
            pointer: effective,
            manifest,
            placement,
            refused: pointer.ignored_rollout.clone(),
        }),
        Err(err)
            if placement.as_ref().is_some_and(|p| p.is_in) && !crate::store::StoreError::unanswered(&err) =>
        {
            let why = format!(
                "rollout target {} refused, staying on {}: {}",
                assigned.tag,
                pointer.tag,
                crate::error::one_line(&err)
            );
            warn!("{why}");
            let stable = pointer.applied(&pointer.assign_stable());
            let manifest = manifest_for(store, &stable, url, trust).await?;
            Ok(Target {
                pointer: stable,
                manifest,
                placement,
                refused: Some(why),
            })
        }
        Err(err) => Err(err),
    }
}

/// The manifest of the tag `pointer` (read from `url`) names, which must be the build
/// the pointer says.
pub async fn manifest_for(
    store: &Store,
    pointer: &Pointer,
    url: &str,
    trust: Option<&Trust>,
) -> anyhow::Result<Manifest> {
    let manifest = target_tag(store, &pointer.tag, trust).await?;
    if manifest.sha256 != pointer.sha256 {
        anyhow::bail!(
            "pointer {url} names {} with sha256 {}, but its manifest says {}",
            pointer.tag,
            pointer.sha256,
            manifest.sha256
        );
    }
    if manifest.size != pointer.size {
        anyhow::bail!(
            "pointer {url} names {} of {} bytes, but its manifest says {}",
            pointer.tag,
            pointer.size,
            manifest.size
        );
    }
    Ok(manifest)
}

/// The release `tag`, its manifest signed when `trust` says so.
pub async fn target_tag(store: &Store, tag: &str, trust: Option<&Trust>) -> anyhow::Result<Manifest> {
    match trust {
        Some(trust) => trust.manifest(store, tag).await?,
        None => Manifest::load(store, tag).await?,
    }
    .ok_or_else(|| anyhow::anyhow!("no release {tag} in {}", store.url()))
}

/// Deploys `manifest`'s release into the state dir and makes it current. The caller
/// holds the state dir's lock. Housekeeping (clearing leftovers, pruning) is logged
/// when it fails, never fatal: it must not keep a boot from its init.
/// `hold`: the agent's hold file, looked at again right before the switch: one made
/// during the download stops it ([`Held`]), with the release fetched.
pub async fn deploy(
    config: &Config,
    state: &StateDir,
    store: &Store,
    manifest: &Manifest,
    progress: fetch::Progress,
    hold: Option<&std::path::Path>,
) -> anyhow::Result<Deployed> {
    let mut fetched = make_present(config, state, store, manifest, progress).await?;
    let tag = &manifest.tag;
    if let Some(hold) = hold.filter(|hold| hold.exists()) {
        return Err(Held {
            hold: hold.display().to_string(),
            tag: tag.clone(),
        }
        .into());
    }
    state
        .activate(tag)
        .with_context(|| format!("making {tag} current"))?;
    fetched.pruned = state.prune(config.keep as usize).unwrap_or_else(|err| {
        warn!("pruning old releases in {}: {err}", state.root().display());
        Vec::new()
    });
    Ok(fetched)
}

/// Makes `manifest`'s release present in the state dir, complete and verified, without
/// switching to it (the agent's hold). The caller holds the state dir's lock.
pub async fn make_present(
    config: &Config,
    state: &StateDir,
    store: &Store,
    manifest: &Manifest,
    progress: fetch::Progress,
) -> anyhow::Result<Deployed> {
    let started = Instant::now();
    if let Err(err) = state.clear_staging() {
        warn!("clearing unfinished deploys: {err}");
    }
    let tag = &manifest.tag;
    let arrival = if state.has_exactly(tag, &manifest.sha256) {
        info!("release {tag} is already present");
        None
    } else {
        room_for(state, manifest, config.reserve)?;
        Some(arrive(config, state, store, manifest, progress).await?)
    };
    Ok(Deployed {
        tag: tag.clone(),
        sha256: manifest.sha256.clone(),
        deployed: arrival.is_some(),
        files: manifest.files,
        bytes: manifest.size,
        duration_ms: started.elapsed().as_millis() as u64,
        pruned: Vec::new(),
        arrival,
    })
}

/// Brings the release into the state dir, complete and verified: from a delta pack
/// when one serves, else by the full download (today's path), the reason said.
async fn arrive(
    config: &Config,
    state: &StateDir,
    store: &Store,
    manifest: &Manifest,
    progress: fetch::Progress,
) -> anyhow::Result<Arrival> {
    let tag = &manifest.tag;
    let staging = state.staging().context("creating a staging dir")?;
    let fallback =
        match delta::attempt(config, state, store, manifest, staging.path(), progress.clone()).await {
            Attempt::Rebuilt { rebuilt, bytes } => {
                state
                    .commit(staging, tag, &manifest.sha256, Some(&rebuilt.index))
                    .with_context(|| format!("committing release {tag}"))?;
                info!(
                    "{tag} rebuilt from a delta pack of {bytes} bytes: {} files reused, {} carried",
                    rebuilt.reused, rebuilt.carried
                );
                return Ok(Arrival::delta(bytes, rebuilt.reused));
            }
            Attempt::Skipped(why) => {
                if let Some(why) = &why {
                    info!("{why}; downloading {tag} in full");
                }
                why
            }
            Attempt::Failed(why) => {
                // The reason may quote what the pack holds.
                let why = crate::text::printable(&why, 512);
                warn!("{why}; downloading {tag} in full");
                Some(why)
            }
        };
    // A failed rebuild's partial tree goes before the full one starts.
    drop(staging);
    let staging = state.staging().context("creating a staging dir")?;
    let (unpacked, index) = tokio::join!(
        fetch::fetch_and_unpack(config, store, manifest, staging.path(), progress),
        fetch_index(store, manifest, config)
    );
    unpacked.with_context(|| format!("deploying {tag}"))?;
    let index_bytes = index.as_ref().map_or(0, |(_, bytes)| *bytes);
    state
        .commit(
            staging,
            tag,
            &manifest.sha256,
            index.as_ref().map(|(index, _)| index),
        )
        .with_context(|| format!("committing release {tag}"))?;
    Ok(Arrival::full(manifest.size + index_bytes, fallback))
}

/// The file index the manifest names, kept beside the release so that a later delta
/// can start from it; `None` (said in the log) when the manifest names none or it does
/// not read: the deploy goes on without it.
async fn fetch_index(store: &Store, manifest: &Manifest, config: &Config) -> Option<(Index, u64)> {
    let named = manifest
        .index
        .as_ref()
        .filter(|_| config.delta == DeltaMode::Auto)?;
    let url = store.url_of(&named.key);
    let read = async {
        let object = store
            .get(&named.key, crate::archive::index::MAX_STORED_BYTES)
            .await?
            .ok_or_else(|| anyhow::anyhow!("not found"))?;
        let index = Index::from_stored(&object.bytes, &named.sha256, config.limits())?;
        if index.totals() != (manifest.files, manifest.unpacked_bytes) {
            anyhow::bail!(
                "it lists {} files of {} bytes, the manifest {} of {}",
                index.totals().0,
                index.totals().1,
                manifest.files,
                manifest.unpacked_bytes
            );
        }
        anyhow::Ok((index, object.bytes.len() as u64))
    };
    match read.await {
        Ok(index) => Some(index),
        Err(err) => {
            warn!(
                "the file index {url} of {}: {}; the next update of this release comes in full",
                manifest.tag,
                crate::error::one_line(&err)
            );
            None
        }
    }
}

/// Refuses a release that would not fit: the bytes and files its manifest declares,
/// plus `reserve` bytes left free, against what the state dir's filesystem has.
fn room_for(state: &StateDir, manifest: &Manifest, reserve: u64) -> anyhow::Result<()> {
    let Some(free) = free_space(state.root()) else {
        return Ok(());
    };
    let needed = manifest.unpacked_bytes.saturating_add(reserve);
    if needed > free.bytes {
        anyhow::bail!(
            "release {} unpacks to {}, but {} has {} free and keeps {} in reserve (deploy.reserve)",
            manifest.tag,
            indicatif::BinaryBytes(manifest.unpacked_bytes),
            state.root().display(),
            indicatif::BinaryBytes(free.bytes),
            indicatif::BinaryBytes(reserve)
        );
    }
    if free.files.is_some_and(|files| manifest.files > files) {
        anyhow::bail!(
            "release {} holds {} files, but {} has only {} free inodes",
            manifest.tag,
            manifest.files,
            state.root().display(),
            free.files.unwrap_or_default()
        );
    }
    Ok(())
}

struct Free {
    bytes: u64,
    /// `None` where the filesystem does not count inodes (btrfs reports 0).
    files: Option<u64>,
}

/// Free bytes and inodes for an unprivileged writer on `dir`'s filesystem.
fn free_space(dir: &std::path::Path) -> Option<Free> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(Free {
        bytes: (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64),
        files: (stat.f_files > 0).then_some(stat.f_favail as u64),
    })
}
