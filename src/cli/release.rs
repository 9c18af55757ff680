//! `bootlace release …`: the operator's commands.

use std::path::Path;

use serde_json::json;

use super::{GlobalArgs, Op, ReleaseCommand, SignArgs, print_json, progress_bar, runtime};
use crate::config::Config;
use crate::error::BadInput;
use crate::error::Exit;
use crate::release::push::{Deltas, Progress, push};
use crate::release::sign::{self, Author, Expiry};
use crate::release::{self, Manifest, Moved, Pointer, check_tag, move_pointer, pointer_name, rollout};
use crate::store::{self, layout};

pub fn run(global: &GlobalArgs, command: &ReleaseCommand) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    if let ReleaseCommand::Vendor { dir } = command {
        return vendor(global, &config, dir);
    }
    let runtime = runtime()?;
    let guard = runtime.enter();
    let access = match command {
        ReleaseCommand::List { .. }
        | ReleaseCommand::Show { .. }
        | ReleaseCommand::Rollout(super::RolloutCommand::Status { .. }) => store::Access::Read,
        _ => store::Access::Write,
    };
    let store = store::open(&config.store, None, access)?;
    let author = match command.sign_args() {
        Some(sign) => author(&config, sign, command.needs_verified_base())?,
        None => Author::unsigned(release::who()),
    };
    let op = &Op {
        global,
        config: &config,
        store: &store,
        author: &author,
    };
    let done = runtime.block_on(async {
        match command {
            ReleaseCommand::Push {
                path,
                tag,
                env,
                delta_from,
                no_delta,
                ..
            } => {
                let deltas = match (delta_from.is_empty(), no_delta) {
                    (false, _) => Deltas::From(distinct(delta_from)),
                    (true, true) => Deltas::Recent(0),
                    (true, false) => Deltas::Recent(DEFAULT_DELTAS),
                };
                push_cmd(op, path, tag, env.as_deref(), &deltas)
                    .await
                    .map(|()| Exit::Ok)
            }
            ReleaseCommand::Delta { tag, from } => delta_cmd(op, tag, from).await.map(|()| Exit::Ok),
            // Handled before the store is opened.
            ReleaseCommand::Vendor { dir } => vendor(global, &config, dir),
            ReleaseCommand::Promote {
                tag,
                env,
                percent,
                waves,
                salt,
                ..
            } => {
                let plan = match (percent, waves) {
                    (Some(percent), _) => Some(rollout::Plan::Percent(*percent)),
                    (None, Some(waves)) => Some(rollout::Plan::Waves(waves.0.clone())),
                    (None, None) => None,
                };
                promote(op, tag, env, plan, salt.as_deref())
                    .await
                    .map(|()| Exit::Ok)
            }
            ReleaseCommand::Rollout(command) => super::rollout::run(op, command).await,
            ReleaseCommand::Rollback { env, to, .. } => {
                rollback(op, env, to.as_deref()).await.map(|()| Exit::Ok)
            }
            ReleaseCommand::Resign { env, .. } => resign(op, env).await.map(|()| Exit::Ok),
            ReleaseCommand::List { env } => super::list::list(global, &config, &store, env.as_deref())
                .await
                .map(|()| Exit::Ok),
            ReleaseCommand::Show { tag } => super::list::show(global, &config, &store, tag)
                .await
                .map(|()| Exit::Ok),
        }
    });
    // An interrupted push may leave packaging running on a blocking thread: do not
    // wait for it.
    drop(guard);
    drop(store);
    runtime.shutdown_background();
    done
}

/// Packs a push makes by default: from the last this many tags its pointer named.
const DEFAULT_DELTAS: usize = 3;

async fn push_cmd(
    op: &Op<'_>,
    path: &Path,
    tag: &str,
    env: Option<&str>,
    deltas: &Deltas,
) -> anyhow::Result<()> {
    let Op {
        global,
        config,
        store,
        author,
    } = *op;
    check_tag(tag)?;
    // Before the tag is spent: a release whose init is ambiguous or whose playbooks
    // need what it does not carry is refused (DESIGN §6.10).
    if path.is_dir() {
        let found = crate::init::lint::candidates_in(&config.init, path)?;
        crate::init::lint::check_playbooks(&config.init, path, &found)?;
    }
    let pointer = env
        .map(|env| pointer_name(&config.deploy.pointer, env))
        .transpose()?;
    let bar = progress_bar(global, "uploading");
    let options = crate::release::push::Options {
        limits: config.deploy.limits(),
        deltas: deltas.clone(),
    };
    let pushing = push(
        store,
        path,
        tag,
        pointer.as_deref(),
        &options,
        author,
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
        let (made, skipped): (Vec<_>, Vec<_>) = pushed.deltas.iter().partition(|d| d.is_ok());
        let made: Vec<_> = made.into_iter().flatten().collect();
        let skipped: Vec<_> = skipped.into_iter().filter_map(|d| d.as_ref().err()).collect();
        return print_json(&json!({
            "manifest": manifest,
            "uploaded": pushed.uploaded,
            "pointer": pointer,
            "deltas": made,
            "delta_warnings": skipped,
        }));
    }
    let sent = if pushed.uploaded {
        "uploaded"
    } else {
        "already in the store"
    };
    outln!(
        "pushed {tag}: {} ({}, {sent})",
        store.url_of(&manifest.archive),
        super::list::size(manifest.size)
    );
    outln!("  sha256 {}", manifest.sha256);
    outln!(
        "  {} files, {} unpacked",
        manifest.files,
        super::list::size(manifest.unpacked_bytes)
    );
    if let Some(signer) = &author.signer {
        outln!("  signed by key {}", signer.key_id);
    }
    for delta in &pushed.deltas {
        match delta {
            Ok(made) => print_made(made)?,
            Err(why) => tracing::warn!("{why}"),
        }
    }
    if let Some((name, moved)) = &pushed.pointer {
        print_moved(name, moved)?;
    }
    Ok(())
}

fn print_made(made: &crate::release::delta::Made) -> anyhow::Result<()> {
    if !made.stored {
        outln!(
            "  delta from {}: not stored: {} would not be smaller than the archive ({})",
            made.from,
            super::list::size(made.bytes),
            super::list::size(made.archive_bytes)
        );
        return Ok(());
    }
    outln!(
        "  delta from {}: {} ({} files carried, {} as patches, {} removed)",
        made.from,
        super::list::size(made.bytes),
        made.files,
        made.patches,
        made.removed
    );
    Ok(())
}

/// `tags` in their order, each once: a base named twice makes one pack.
fn distinct(tags: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    tags.iter().filter(|t| seen.insert(t.as_str())).cloned().collect()
}

/// `release delta TAG --from OLD…`: one pack from each OLD.
async fn delta_cmd(op: &Op<'_>, tag: &str, from: &[String]) -> anyhow::Result<()> {
    let Op {
        global,
        config,
        store,
        ..
    } = *op;
    check_tag(tag)?;
    let from = distinct(from);
    for base in &from {
        crate::release::delta::check_base(store, tag, base, "--from").await?;
    }
    let mut made = Vec::new();
    for base in &from {
        let pack = crate::release::delta::make(
            store,
            tag,
            base,
            crate::release::delta::NewFiles::Store,
            config.deploy.limits(),
        )
        .await?;
        if !global.json {
            if pack.stored {
                outln!("{tag}: {}", store.url_of(&pack.key));
            }
            print_made(&pack)?;
        }
        made.push(pack);
    }
    if global.json {
        return print_json(&made);
    }
    Ok(())
}

async fn promote(
    op: &Op<'_>,
    tag: &str,
    env: &str,
    plan: Option<rollout::Plan>,
    salt: Option<&str>,
) -> anyhow::Result<()> {
    let Op {
        global,
        config,
        store,
        author,
    } = *op;
    check_tag(tag)?;
    if salt.is_some() && plan.is_none() {
        return Err(crate::error::BadInput("--salt goes with --percent or --waves".into()).into());
    }
    let name = pointer_name(&config.deploy.pointer, env)?;
    let manifest = Manifest::load_complete(store, tag).await?;
    sign::check_manifest(store, tag, author).await?;
    if let Some(plan) = plan {
        let now = release::now();
        if Pointer::load(store, &name).await?.is_none() {
            anyhow::bail!(
                "no pointer {}: a rollout needs a stable tag first (release promote TAG --env {env})",
                store.url_of(&layout::pointer(&name))
            );
        }
        let moved = release::moves::edit_pointer(store, &name, author, |current| {
            rollout::start(current, &manifest, &plan, salt, &now).map(Some)
        })
        .await?;
        return report_moved(global, &name, &moved);
    }
    let moved = move_pointer(store, &name, author, |_| std::future::ready(Ok(manifest.clone()))).await?;
    report_moved(global, &name, &moved)
}

async fn rollback(op: &Op<'_>, env: &str, to: Option<&str>) -> anyhow::Result<()> {
    let Op {
        global,
        config,
        store,
        author,
    } = *op;
    if let Some(tag) = to {
        check_tag(tag)?;
    }
    let name = pointer_name(&config.deploy.pointer, env)?;
    let url = store.url_of(&layout::pointer(&name));
    let moved = move_pointer(store, &name, author, |current| async move {
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
        let manifest = Manifest::load_complete(store, &target).await?;
        sign::check_manifest(store, &target, author).await?;
        Ok(manifest)
    })
    .await?;
    report_moved(global, &name, &moved)
}

/// `release resign`: the pointer as it is, under a new serial and expiry.
async fn resign(op: &Op<'_>, env: &str) -> anyhow::Result<()> {
    let Op {
        global,
        config,
        store,
        author,
    } = *op;
    if author.signer.is_none() {
        return Err(BadInput(format!(
            "release resign signs: give --sign-key FILE (or {})",
            sign::SIGN_KEY_VAR
        ))
        .into());
    }
    let name = pointer_name(&config.deploy.pointer, env)?;
    let moved =
        release::moves::edit_pointer(store, &name, author, |current| Ok(Some(current.clone()))).await?;
    report_moved(global, &name, &moved)
}

/// The author of a signing command: its key loaded (and its password asked) before
/// anything is written.
fn author(config: &Config, sign: &SignArgs, needs_verified_base: bool) -> anyhow::Result<Author> {
    let expires = match &sign.expires {
        Some(_) if sign.sign_key.is_none() => {
            return Err(
                BadInput("--expires goes with --sign-key: only signed pointers expire".into()).into(),
            );
        }
        Some(text) => Expiry::parse(text, release::clock())?,
        None => Expiry::default(),
    };
    let keys = crate::trust::Keys::from_config(&config.trust)?;
    let mut author = Author::new(release::who(), sign.sign_key.as_ref(), expires, keys)?;
    author.needs_verified_base = needs_verified_base;
    Ok(author)
}

impl ReleaseCommand {
    /// The signing options of a command that writes manifests or pointers.
    fn sign_args(&self) -> Option<&SignArgs> {
        use super::RolloutCommand as R;
        match self {
            ReleaseCommand::Push { sign, .. }
            | ReleaseCommand::Promote { sign, .. }
            | ReleaseCommand::Rollback { sign, .. }
            | ReleaseCommand::Resign { sign, .. }
            | ReleaseCommand::Rollout(
                R::Set { sign, .. }
                | R::Halt { sign, .. }
                | R::Resume { sign, .. }
                | R::Abort { sign, .. }
                | R::Finish { sign, .. }
                | R::Watch { sign, .. },
            ) => Some(sign),
            ReleaseCommand::Rollout(R::Status { .. })
            | ReleaseCommand::List { .. }
            | ReleaseCommand::Delta { .. }
            | ReleaseCommand::Vendor { .. }
            | ReleaseCommand::Show { .. } => None,
        }
    }

    /// Whether the change depends on what the pointer says (its history, its
    /// rollout), so that a signed change must find it signed.
    fn needs_verified_base(&self) -> bool {
        match self {
            ReleaseCommand::Push { .. } => false,
            ReleaseCommand::Promote { percent, waves, .. } => percent.is_some() || waves.is_some(),
            ReleaseCommand::Rollback { to, .. } => to.is_none(),
            _ => true,
        }
    }
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

/// `release vendor DIR`: needs no store, only ansible-galaxy.
fn vendor(global: &GlobalArgs, config: &Config, dir: &Path) -> anyhow::Result<Exit> {
    if !dir.is_dir() {
        return Err(BadInput(format!("release vendor: {} is not a directory", dir.display())).into());
    }
    let lock = crate::init::vendor::vendor(&config.init, dir, global.json)?;
    if global.json {
        print_json(&lock)?;
        return Ok(Exit::Ok);
    }
    let root = config.init.root(dir);
    outln!(
        "vendored into {}: {} roles, {} collections; lock {}",
        root.display(),
        lock.roles.len(),
        lock.collections.len(),
        root.join("vendor.lock.json").display()
    );
    for (kind, items) in [("role", &lock.roles), ("collection", &lock.collections)] {
        for item in items {
            outln!(
                "  {kind:10} {} {} from {}",
                item.name,
                item.version.as_deref().unwrap_or("(no version)"),
                item.source.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(Exit::Ok)
}
