//! `bootlace release …`: the operator's commands.

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;
use serde_json::json;

use super::{GlobalArgs, Op, ReleaseCommand, SignArgs, print_json, progress_bar, runtime};
use crate::config::Config;
use crate::error::BadInput;
use crate::exit::Exit;
use crate::release::push::{Progress, push};
use crate::release::sign::{self, Author, Expiry};
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
            ReleaseCommand::Push { path, tag, env, .. } => {
                push_cmd(op, path, tag, env.as_deref()).await.map(|()| Exit::Ok)
            }
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
            ReleaseCommand::List { env } => list(global, &config, &store, env.as_deref())
                .await
                .map(|()| Exit::Ok),
            ReleaseCommand::Show { tag } => show(global, &config, &store, tag).await.map(|()| Exit::Ok),
        }
    });
    // An interrupted push may leave packaging running on a blocking thread: do not
    // wait for it.
    drop(guard);
    drop(store);
    runtime.shutdown_background();
    done
}

async fn push_cmd(op: &Op<'_>, path: &Path, tag: &str, env: Option<&str>) -> anyhow::Result<()> {
    let Op {
        global,
        config,
        store,
        author,
    } = *op;
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
    if let Some(signer) = &author.signer {
        outln!("  signed by key {}", signer.key_id);
    }
    if let Some((name, moved)) = &pushed.pointer {
        print_moved(name, moved)?;
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
    let keys = crate::trust::Keys::from_config(&config.trust)?;
    let mut pointers = BTreeMap::new();
    let mut pointer_signatures = BTreeMap::new();
    for name in pointer_names {
        match load_pointer(store, &name, &keys).await {
            Ok(Some((pointer, signed))) => {
                pointer_signatures.insert(name.clone(), signed);
                pointers.insert(name, pointer);
            }
            Ok(None) => {}
            Err(err) if crate::store::StoreError::unanswered(&err) => return Err(err),
            Err(err) => tracing::warn!("skipping pointer {name}: {}", crate::error::one_line(&err)),
        }
    }
    let build_keys = store.list(layout::BUILDS).await?;
    let signed: std::collections::HashSet<&str> = build_keys
        .iter()
        .filter_map(|k| k.strip_suffix(crate::release::signature::SIGNATURE_SUFFIX))
        .filter_map(|k| layout::name_in(layout::BUILDS, k))
        .collect();
    let mut tags: Vec<String> = build_keys
        .iter()
        .filter_map(|k| layout::name_in(layout::BUILDS, k))
        .map(str::to_owned)
        .collect();
    tags.retain(|tag| match check_tag(tag) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("skipping {}: {why}", layout::manifest(tag));
            false
        }
    });
    let (keys, signed) = (&keys, &signed);
    type Loaded = anyhow::Result<Option<(Manifest, Signature)>>;
    let loaded: Vec<(String, Loaded)> = futures::stream::iter(tags)
        .map(|tag| async move {
            let loaded = async {
                let key = layout::manifest(&tag);
                let Some(object) = store.get(&key, release::manifest::MAX_BYTES).await? else {
                    return Ok(None);
                };
                let manifest = Manifest::parse(&object.bytes, &tag)
                    .map_err(|why| anyhow::anyhow!("reading manifest {}: {why}", store.url_of(&key)))?;
                let signature = match signed.contains(tag.as_str()) {
                    true => Signature::of(store, &key, &object.bytes, keys).await?,
                    false => Signature::UNSIGNED,
                };
                anyhow::Ok(Some((manifest, signature)))
            }
            .await;
            (tag, loaded)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // One unreadable manifest does not hide the others: it is named and skipped. A
    // store that fails to answer still fails the listing.
    let mut manifests = Vec::new();
    let mut signatures = BTreeMap::new();
    let mut unreadable = BTreeMap::new();
    for (tag, loaded) in loaded {
        match loaded {
            Ok(Some((manifest, signature))) => {
                signatures.insert(tag, signature);
                manifests.push(manifest);
            }
            Ok(None) => {}
            Err(err) if crate::store::StoreError::unanswered(&err) => return Err(err),
            Err(err) => {
                let why = crate::error::one_line(&err);
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
                            "files": m.files, "pointers": marks(&m.tag), "rollouts": rollouts(&m.tag),
                            "signature": signatures.get(&m.tag)})
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
        "{:width$}  {:20}  {:>10}  {:>8}  {:16}  POINTERS",
        "TAG",
        "CREATED",
        "SIZE",
        "FILES",
        "SIGNED BY"
    );
    for m in &manifests {
        let mut marks = marks(&m.tag)
            .iter()
            .map(|n| {
                let p = &pointers[*n];
                let signed = &pointer_signatures[*n];
                format!(
                    "{n} ({})",
                    signed.describe_pointer(p.serial, p.expires.as_deref(), !keys.is_empty())
                )
            })
            .collect::<Vec<_>>();
        marks.extend(rollouts(&m.tag));
        let signed_by = signatures.get(&m.tag).map(Signature::column).unwrap_or_default();
        outln!(
            "{:width$}  {:20}  {:>10}  {:>8}  {:16}  {}",
            m.tag,
            m.created_at,
            size(m.size),
            m.files,
            signed_by,
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

async fn show(global: &GlobalArgs, config: &Config, store: &Store, tag: &str) -> anyhow::Result<()> {
    check_tag(tag)?;
    // Read once: the manifest's bytes are also what its signature is checked over.
    let key = layout::manifest(tag);
    let bytes = store
        .get(&key, release::manifest::MAX_BYTES)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no release {tag} in {}", store.url()))?
        .bytes;
    let manifest = Manifest::parse(&bytes, tag)
        .map_err(|why| anyhow::anyhow!("reading manifest {}: {why}", store.url_of(&key)))?;
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
    let keys = crate::trust::Keys::from_config(&config.trust)?;
    let signature = Signature::of(store, &key, &bytes, &keys).await?;
    outln!("{:16}{}", "signature", signature.describe());
    // Which pointers name it, for everyone or in a rollout.
    let now = release::clock();
    for name in names(store, layout::POINTERS).await? {
        let Ok(Some((pointer, signed))) = load_pointer(store, &name, &keys).await else {
            continue;
        };
        if pointer.tag == tag {
            outln!(
                "{:16}{name} (stable, {})",
                "pointer",
                signed.describe_pointer(pointer.serial, pointer.expires.as_deref(), !keys.is_empty())
            );
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

/// Pointer `name`, and what its signature says: whether it verifies, and by which key.
async fn load_pointer(
    store: &Store,
    name: &str,
    keys: &crate::trust::Keys,
) -> anyhow::Result<Option<(Pointer, crate::trust::Signed)>> {
    let key = layout::pointer(name);
    let Some(object) = store.get(&key, release::pointer::MAX_BYTES).await? else {
        return Ok(None);
    };
    let pointer = Pointer::parse(&object.bytes)
        .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
    let signed = crate::trust::Signed::of(keys, store, &key, &object.bytes).await?;
    if let crate::trust::Signed::Bad(why) = &signed {
        tracing::warn!("pointer {} does not verify: {why}", store.url_of(&key));
    }
    Ok(Some((pointer, signed)))
}

/// Whether an object is signed, by which key, and whether that key is one of
/// `[trust] keys` and the signature verifies.
#[derive(Debug, serde::Serialize)]
struct Signature {
    /// The key id the signature names; `None` when unsigned.
    key_id: Option<String>,
    /// Checked against `[trust] keys`: `None` without any.
    verified: Option<bool>,
    /// Why it does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

impl Signature {
    async fn of(
        store: &Store,
        key: &str,
        bytes: &[u8],
        keys: &crate::trust::Keys,
    ) -> anyhow::Result<Signature> {
        let Some(text) = crate::release::signature::read_signature(store, key).await? else {
            return Ok(Signature::UNSIGNED);
        };
        let key_id = std::str::from_utf8(&text)
            .ok()
            .and_then(|text| minisign::SignatureBox::from_string(text).ok())
            .map(|sig| crate::release::signature::key_id(sig.keynum()));
        let checked = (!keys.is_empty()).then(|| keys.verify(store, key, bytes, Some(&text)));
        Ok(Signature {
            verified: checked.as_ref().map(Result::is_ok),
            problem: match (&key_id, checked) {
                (None, _) => Some(format!(
                    "{} is not a minisign signature",
                    crate::release::signature::signature_key(key)
                )),
                (_, Some(Err(refused))) => Some(refused.to_string()),
                _ => None,
            },
            key_id,
        })
    }

    const UNSIGNED: Signature = Signature {
        key_id: None,
        verified: None,
        problem: None,
    };

    /// For a table: the key id, `-` when unsigned, `BAD` when it does not verify.
    fn column(&self) -> String {
        match (&self.key_id, &self.problem) {
            (_, Some(_)) => "BAD".into(),
            (Some(id), None) => id.clone(),
            (None, None) => "-".into(),
        }
    }

    fn describe(&self) -> String {
        match (&self.key_id, self.verified, &self.problem) {
            (None, _, None) => "unsigned".into(),
            (_, _, Some(problem)) => format!("DOES NOT VERIFY: {problem}"),
            (Some(id), Some(true), None) => format!("key {id} (verified against [trust] keys)"),
            (Some(id), _, None) => format!("key {id} (not checked: no [trust] keys here)"),
        }
    }
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
