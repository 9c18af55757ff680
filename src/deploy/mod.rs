//! The instance's half (DESIGN §5): follow the pointer, fetch the build in one
//! streaming pass, unpack it safely, make it durable, and switch `current` to it
//! atomically — or leave everything as it was and say why.

pub mod fetch;
pub mod state;
pub mod unpack;

use std::time::Instant;

use anyhow::Context;
use tracing::info;

use crate::config::Config;
use crate::identity::Identity;
use crate::release::{Manifest, Pointer};
use crate::store::Store;
use state::StateDir;

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
}

/// The release the identity's pointer names.
pub async fn target(config: &Config, identity: &Identity, store: &Store) -> anyhow::Result<Manifest> {
    let name = crate::release::pointer_name_for(&config.deploy.pointer, identity)?;
    let url = store.url_of(&crate::store::layout::pointer(&name));
    let pointer = Pointer::load(store, &name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no pointer {url}: nothing to deploy"))?;
    let manifest = target_tag(store, &pointer.tag).await?;
    if manifest.sha256 != pointer.sha256 {
        anyhow::bail!(
            "pointer {url} names {} with sha256 {}, but its manifest says {}",
            pointer.tag,
            pointer.sha256,
            manifest.sha256
        );
    }
    Ok(manifest)
}

/// The release `tag`.
pub async fn target_tag(store: &Store, tag: &str) -> anyhow::Result<Manifest> {
    Manifest::load(store, tag)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no release {tag} in {}", store.url()))
}

/// Deploys `manifest`'s release into the state dir and makes it current. The caller
/// holds the state dir's lock.
pub async fn deploy(
    config: &Config,
    state: &StateDir,
    store: &Store,
    manifest: &Manifest,
    progress: fetch::Progress,
) -> anyhow::Result<Deployed> {
    let started = Instant::now();
    state.clear_staging().context("clearing unfinished deploys")?;
    let tag = &manifest.tag;
    let deployed = if state.has(tag) {
        info!("release {tag} is already present");
        false
    } else {
        let staging = state.staging().context("creating a staging dir")?;
        let fetched = fetch::fetch_and_unpack(config, store, manifest, &staging, progress).await;
        if let Err(err) = fetched {
            let _ = state::remove_tree(&staging);
            return Err(err.context(format!("deploying {tag}")));
        }
        state
            .commit(&staging, tag)
            .with_context(|| format!("committing release {tag}"))?;
        true
    };
    state
        .activate(tag)
        .with_context(|| format!("making {tag} current"))?;
    let pruned = state
        .prune(config.deploy.keep as usize)
        .context("pruning old releases")?;
    Ok(Deployed {
        tag: tag.clone(),
        sha256: manifest.sha256.clone(),
        deployed,
        files: manifest.files,
        bytes: manifest.size,
        duration_ms: started.elapsed().as_millis() as u64,
        pruned,
    })
}
