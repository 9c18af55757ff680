//! `bootlace deploy` and `bootlace rollback`: the deploy step alone, and switching
//! `current` between local releases.

use anyhow::Context;

use super::{GlobalArgs, print_json, progress_bar, runtime};
use crate::deploy::{self, state::StateDir};
use crate::error::Exit;
use crate::identity;
use crate::store;

pub fn deploy(global: &GlobalArgs, tag: Option<&str>) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    if let Some(tag) = tag {
        crate::release::check_tag(tag)?;
    }
    let state = open_state(&config.deploy.state_dir)?;
    let _lock = state.lock(config.deploy.lock_timeout)?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let deployed = runtime.block_on(async {
        let identity = match tag {
            Some(_) => None,
            None => Some(identity::resolve(&config.identity, &config.identity.source).await?),
        };
        let credentials = identity.as_ref().and_then(|i| i.credentials.as_ref());
        let store = store::open(&config.store, credentials, store::Access::Read)?;
        let trust = crate::trust::Trust::for_instance(&config.trust, &config.deploy.state_dir, true)?;
        let manifest = match &identity {
            Some(identity) => {
                deploy::target(&config.deploy, identity, &store, trust.as_ref())
                    .await?
                    .manifest
            }
            None => deploy::target_tag(&store, tag.unwrap_or_default(), trust.as_ref()).await?,
        };
        deploy::deploy(
            &config.deploy,
            &state,
            &store,
            &manifest,
            progress_bar(global, "deploying"),
            None,
        )
        .await
    })?;
    if global.json {
        print_json(&deployed)?;
    } else if deployed.deployed {
        outln!(
            "deployed {} ({} files, {}) in {} ms; current -> {}",
            deployed.tag,
            deployed.files,
            indicatif::BinaryBytes(deployed.bytes),
            deployed.duration_ms,
            deployed.tag
        );
    } else {
        outln!(
            "{} was already present; current -> {}",
            deployed.tag,
            deployed.tag
        );
    }
    Ok(Exit::Ok)
}

pub fn rollback(global: &GlobalArgs, to: Option<&str>) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    if let Some(tag) = to {
        crate::release::check_tag(tag)?;
    }
    let state = open_state(&config.deploy.state_dir)?;
    let _lock = state.lock(config.deploy.lock_timeout)?;
    let current = state.current();
    let target = match to {
        Some(tag) if state.has(tag) => tag.to_owned(),
        Some(tag) => anyhow::bail!("no local release {tag} in {}", state.root().display()),
        None => state.previous().ok_or_else(|| {
            anyhow::anyhow!(
                "no previous release in {} to roll back to",
                state.root().display()
            )
        })?,
    };
    state
        .activate(&target)
        .with_context(|| format!("making {target} current"))?;
    if global.json {
        print_json(&serde_json::json!({"current": target, "previous": current}))?;
    } else {
        let was = current.map(|c| format!(" (was {c})")).unwrap_or_default();
        outln!("current -> {target}{was}");
    }
    Ok(Exit::Ok)
}

fn open_state(dir: &std::path::Path) -> anyhow::Result<StateDir> {
    StateDir::open(dir).with_context(|| format!("opening state dir {}", dir.display()))
}
