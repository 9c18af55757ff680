//! `bootlace release …`: the operator's commands.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use serde_json::json;

use super::{GlobalArgs, ReleaseCommand, print_json, progress_bar, runtime};
use crate::config::Config;
use crate::exit::Exit;
use crate::release::push::{Progress, push};
use crate::release::{self, Manifest, Moved, Pointer, check_tag, move_pointer, pointer_name, rollout};
use crate::store::{self, Store, layout};

pub fn run(global: &GlobalArgs, command: &ReleaseCommand) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let runtime = runtime()?;
    let guard = runtime.enter();
    let access = match command {
        ReleaseCommand::List { .. }
        | ReleaseCommand::Show { .. }
        | ReleaseCommand::Rollout(super::RolloutCommand::Status { .. }) => store::Access::Read,
        _ => store::Access::Write,
    };
    let store = store::open(&config.store, None, access)?;
    let done = runtime.block_on(async {
        match command {
            ReleaseCommand::Push { path, tag, env } => {
                push_cmd(global, &config, &store, path, tag, env.as_deref())
                    .await
                    .map(|()| Exit::Ok)
            }
            ReleaseCommand::Promote {
                tag,
                env,
                percent,
                waves,
                salt,
            } => {
                let plan = match (percent, waves) {
                    (Some(percent), _) => Some(rollout::Plan::Percent(*percent)),
                    (None, Some(waves)) => Some(rollout::Plan::Waves(waves.0.clone())),
                    (None, None) => None,
                };
                promote(global, &config, &store, tag, env, plan, salt.as_deref())
                    .await
                    .map(|()| Exit::Ok)
            }
            ReleaseCommand::Rollout(command) => super::rollout::run(global, &config, &store, command).await,
            ReleaseCommand::Rollback { env, to } => rollback(global, &config, &store, env, to.as_deref())
                .await
                .map(|()| Exit::Ok),
            ReleaseCommand::List { env } => list(global, &config, &store, env.as_deref())
                .await
                .map(|()| Exit::Ok),
            ReleaseCommand::Show { tag } => show(global, &store, tag).await.map(|()| Exit::Ok),
        }
    });
    // An interrupted push may leave packaging running on a blocking thread: do not
    // wait for it.
    drop(guard);
    drop(store);
    runtime.shutdown_background();
    done
}

async fn push_cmd(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    path: &Path,
    tag: &str,
    env: Option<&str>,
) -> anyhow::Result<()> {
    check_tag(tag)?;
    let pointer = env
        .map(|env| pointer_name(&config.deploy.pointer, env))
        .transpose()?;
    let bar = progress_bar(global, "uploading");
    let pushing = push(
        store,
        path,
        tag,
        pointer.as_deref(),
        config.deploy.limits(),
        |event| match event {
            Progress::Start(total) => {
                bar.set_length(total);
                bar.set_position(0);
            }
            Progress::Sent(n) => bar.inc(n),
            Progress::Done => bar.finish_and_clear(),
        },
    );
    // Stopping the push drops it, and with it the temporary archive.
    let pushed = tokio::select! {
        pushed = pushing => pushed?,
        signal = super::interrupted() => {
            bar.finish_and_clear();
            anyhow::bail!(
                "push of {tag} interrupted by {signal}; its temporary archive was removed \
                 (`bootlace release show {tag}` tells whether the tag was published)"
            )
        }
    };
    let manifest = &pushed.manifest;
    if global.json {
        let pointer = pushed
            .pointer
            .as_ref()
            .map(|(name, moved)| pointer_json(name, moved));
        return print_json(&json!({"manifest": manifest, "uploaded": pushed.uploaded, "pointer": pointer}));
    }
    let sent = if pushed.uploaded {
        "uploaded"
    } else {
        "already in the store"
    };
    outln!(
        "pushed {tag}: {} ({}, {sent})",
        store.url_of(&manifest.archive),
        size(manifest.size)
    );
    outln!("  sha256 {}", manifest.sha256);
    outln!(
        "  {} files, {} unpacked",
        manifest.files,
        size(manifest.unpacked_bytes)
    );
    if let Some((name, moved)) = &pushed.pointer {
        print_moved(name, moved)?;
    }
    Ok(())
}

async fn promote(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    tag: &str,
    env: &str,
    plan: Option<rollout::Plan>,
    salt: Option<&str>,
) -> anyhow::Result<()> {
    check_tag(tag)?;
    if salt.is_some() && plan.is_none() {
        return Err(crate::exit::BadInput("--salt goes with --percent or --waves".into()).into());
    }
    let name = pointer_name(&config.deploy.pointer, env)?;
    let manifest = Manifest::load_complete(store, tag).await?;
    if let Some(plan) = plan {
        let now = release::now();
        if Pointer::load(store, &name).await?.is_none() {
            anyhow::bail!(
                "no pointer {}: a rollout needs a stable tag first (release promote TAG --env {env})",
                store.url_of(&layout::pointer(&name))
            );
        }
        let moved = release::pointer::edit_pointer(store, &name, &release::who(), |current| {
            rollout::start(current, &manifest, &plan, salt, &now).map(Some)
        })
        .await?;
        return report_moved(global, &name, &moved);
    }
    let moved = move_pointer(store, &name, &release::who(), |_| {
        std::future::ready(Ok(manifest.clone()))
    })
    .await?;
    report_moved(global, &name, &moved)
}

async fn rollback(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    env: &str,
    to: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(tag) = to {
        check_tag(tag)?;
    }
    let name = pointer_name(&config.deploy.pointer, env)?;
    let url = store.url_of(&layout::pointer(&name));
    let moved = move_pointer(store, &name, &release::who(), |current| async move {
        let current = current.ok_or_else(|| anyhow::anyhow!("no pointer {url}: nothing to roll back"))?;
        let target = match to {
            Some(tag) => tag.to_owned(),
            // During a rollout, rolling back is an abort: everyone back to the stable tag.
            None if current.rollout.is_some() => current.tag.clone(),
            None => match current.history.first() {
                Some(previous) => previous.tag.clone(),
                None => anyhow::bail!("pointer {url} has no earlier tag to roll back to"),
            },
        };
        Manifest::load_complete(store, &target).await
    })
    .await?;
    report_moved(global, &name, &moved)
}

fn report_moved(global: &GlobalArgs, name: &str, moved: &Moved) -> anyhow::Result<()> {
    if global.json {
        return print_json(&pointer_json(name, moved));
    }
    print_moved(name, moved)
}

fn print_moved(name: &str, moved: &Moved) -> anyhow::Result<()> {
    let p = &moved.pointer;
    if let Some(r) = &p.rollout {
        let state = if r.halted { ", halted" } else { "" };
        let how = match &r.waves {
            Some(waves) => waves
                .iter()
                .map(|w| format!("{}@{}", w.percent, w.after))
                .collect::<Vec<_>>()
                .join(","),
            None => format!("{}%", r.percent),
        };
        outln!(
            "pointer {name} -> {} at serial {}, rolling out {} to {how}{state} (now {}%)",
            p.tag,
            p.serial,
            r.tag,
            r.effective_percent(release::clock())
        );
        return Ok(());
    }
    if moved.changed {
        let from = p
            .history
            .first()
            .map(|h| format!(" (was {})", h.tag))
            .unwrap_or_default();
        outln!("pointer {name} -> {} at serial {}{from}", p.tag, p.serial);
    } else {
        outln!(
            "pointer {name} already names {} (serial {}); nothing changed",
            p.tag,
            p.serial
        );
    }
    Ok(())
}

fn pointer_json(name: &str, moved: &Moved) -> serde_json::Value {
    json!({"name": name, "changed": moved.changed, "retries": moved.retries, "pointer": moved.pointer})
}

pub(super) async fn list(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    env: Option<&str>,
) -> anyhow::Result<()> {
    let pointer_names: Vec<String> = match env {
        Some(env) => vec![pointer_name(&config.deploy.pointer, env)?],
        None => names(store, layout::POINTERS).await?,
    };
    let mut pointers = BTreeMap::new();
    for name in pointer_names {
        match Pointer::load(store, &name).await {
            Ok(Some(pointer)) => {
                pointers.insert(name, pointer);
            }
            Ok(None) => {}
            Err(err) if crate::store::StoreError::unanswered(&err) => return Err(err),
            Err(err) => tracing::warn!("skipping pointer {name}: {}", crate::exit::one_line(&err)),
        }
    }
    let mut tags = names(store, layout::BUILDS).await?;
    tags.retain(|tag| match check_tag(tag) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("skipping {}: {why}", layout::manifest(tag));
            false
        }
    });
    let loaded: Vec<(String, anyhow::Result<Option<Manifest>>)> = futures::stream::iter(tags)
        .map(|tag| async move {
            let manifest = Manifest::load(store, &tag).await;
            (tag, manifest)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // One unreadable manifest does not hide the others: it is named and skipped. A
    // store that fails to answer still fails the listing.
    let mut manifests = Vec::new();
    let mut unreadable = BTreeMap::new();
    for (tag, loaded) in loaded {
        match loaded {
            Ok(manifest) => manifests.extend(manifest),
            Err(err) if crate::store::StoreError::unanswered(&err) => return Err(err),
            Err(err) => {
                let why = crate::exit::one_line(&err);
                tracing::warn!("skipping {tag}: {why}");
                unreadable.insert(tag, why);
            }
        }
    }
    manifests.sort_by(|a, b| (&b.created_at, &b.tag).cmp(&(&a.created_at, &a.tag)));
    let marks = |tag: &str| -> Vec<&str> {
        pointers
            .iter()
            .filter(|(_, p)| p.tag == tag)
            .map(|(n, _)| n.as_str())
            .collect()
    };
    let now = release::clock();
    // Pointers rolling a tag out, with the share they give it now.
    let rollouts = |tag: &str| -> Vec<String> {
        pointers
            .iter()
            .filter_map(|(n, p)| {
                let r = p.rollout.as_ref().filter(|r| r.tag == tag)?;
                Some(format!("{n} (rollout {}%)", r.effective_percent(now)))
            })
            .collect()
    };
    if global.json {
        let releases: Vec<_> = manifests
            .iter()
            .map(|m| {
                json!({"tag": m.tag, "created_at": m.created_at, "sha256": m.sha256, "size": m.size,
                            "files": m.files, "pointers": marks(&m.tag), "rollouts": rollouts(&m.tag)})
            })
            .collect();
        return print_json(&json!({"releases": releases, "pointers": pointers, "unreadable": unreadable}));
    }
    if manifests.is_empty() {
        outln!("no releases in {}", store.url());
        return Ok(());
    }
    let width = manifests.iter().map(|m| m.tag.len()).max().unwrap_or(3).max(3);
    outln!(
        "{:width$}  {:20}  {:>10}  {:>8}  POINTERS",
        "TAG",
        "CREATED",
        "SIZE",
        "FILES"
    );
    for m in &manifests {
        let mut marks = marks(&m.tag)
            .iter()
            .map(|n| format!("{n} (serial {})", pointers[*n].serial))
            .collect::<Vec<_>>();
        marks.extend(rollouts(&m.tag));
        outln!(
            "{:width$}  {:20}  {:>10}  {:>8}  {}",
            m.tag,
            m.created_at,
            size(m.size),
            m.files,
            marks.join(", ")
        );
    }
    let dangling: Vec<_> = pointers
        .iter()
        .filter(|(_, p)| !manifests.iter().any(|m| m.tag == p.tag))
        .collect();
    for (name, p) in dangling {
        tracing::warn!("pointer {name} names {}, which has no manifest", p.tag);
    }
    Ok(())
}

async fn show(global: &GlobalArgs, store: &Store, tag: &str) -> anyhow::Result<()> {
    check_tag(tag)?;
    let manifest = Manifest::load(store, tag)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no release {tag} in {}", store.url()))?;
    if global.json {
        return print_json(&manifest);
    }
    let value = serde_json::to_value(&manifest)?;
    for (key, value) in value.as_object().into_iter().flatten() {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        outln!("{key:16}{text}");
    }
    // Which pointers name it, for everyone or in a rollout.
    let now = release::clock();
    for name in names(store, layout::POINTERS).await? {
        let Ok(Some(pointer)) = Pointer::load(store, &name).await else {
            continue;
        };
        if pointer.tag == tag {
            outln!("{:16}{name} (stable, serial {})", "pointer", pointer.serial);
        }
        if let Some(r) = pointer.rollout.as_ref().filter(|r| r.tag == tag) {
            let halted = if r.halted { ", halted" } else { "" };
            outln!(
                "{:16}{name} ({}% of instances now{halted}, serial {})",
                "rollout",
                r.effective_percent(now),
                pointer.serial
            );
        }
    }
    Ok(())
}

/// The names of bootlace's JSON objects in a layout folder.
async fn names(store: &Store, dir: &str) -> anyhow::Result<Vec<String>> {
    let keys = store.list(dir).await?;
    Ok(keys
        .iter()
        .filter_map(|k| layout::name_in(dir, k))
        .map(str::to_owned)
        .collect())
}

/// Bytes for people: 1.2 MiB.
fn size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
