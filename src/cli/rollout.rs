//! `bootlace release rollout …`: a staged rollout's status, its percentage, halt,
//! resume, abort, finish, and `watch`, which steps through percentages on the evidence
//! of the reports. Every change is a compare-and-swap of the pointer (serial + 1).

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use super::Op;
use super::{GlobalArgs, RolloutCommand, print_json};
use crate::config::Config;
use crate::error::BadInput;
use crate::error::Exit;
use crate::fleet::{self, Fleet, Instance};
use crate::release::rollout::{self, Action, Rollout};
use crate::release::{self, Pointer, moves::edit_pointer, pointer_name};
use crate::report::Status;
use crate::store::{Store, layout};

pub async fn run(op: &Op<'_>, command: &RolloutCommand) -> anyhow::Result<Exit> {
    let (global, config, store) = (op.global, op.config, op.store);
    match command {
        RolloutCommand::Status { env, stale } => status(global, config, store, env, *stale).await,
        RolloutCommand::Set {
            env,
            percent,
            max_failures,
            force,
            ..
        } => {
            let name = pointer_name(&config.deploy.pointer, env)?;
            let moved = set(op, env, &name, *percent, *max_failures, *force).await?;
            show(global, &name, &moved.pointer)
        }
        RolloutCommand::Halt { env, .. } => act(op, env, Action::Halt).await,
        RolloutCommand::Resume { env, .. } => act(op, env, Action::Resume).await,
        RolloutCommand::Abort { env, .. } => act(op, env, Action::Abort).await,
        RolloutCommand::Finish { env, .. } => act(op, env, Action::Finish).await,
        RolloutCommand::Watch {
            env,
            steps,
            bake,
            max_failures,
            ..
        } => watch(op, env, steps, *bake, *max_failures).await,
    }
}

/// Where the instances of an environment stand in its rollout.
#[derive(Debug, Serialize)]
pub struct Standing {
    pub pointer: String,
    pub serial: u64,
    pub stable: String,
    pub target: Option<String>,
    pub percent: Option<f64>,
    pub halted: bool,
    pub waves: Option<Vec<rollout::Wave>>,
    pub instances: Counts,
}

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// Instances with a report in the environment.
    pub known: u64,
    /// Of them, those the percentage covers (by the formula, whatever they run).
    pub covered: u64,
    pub on_stable: u64,
    pub on_target: u64,
    pub on_other: u64,
    /// Failed on the target, or rolled back from it.
    pub failed: u64,
    pub rolled_back: u64,
    pub stale: u64,
}

impl Standing {
    fn of(name: &str, pointer: &Pointer, fleet: &Fleet, now: SystemTime) -> Standing {
        let rollout = pointer.rollout.as_ref();
        let percent = rollout.map(|r| r.effective_percent(now));
        let mut counts = Counts::default();
        for i in &fleet.instances {
            counts.known += 1;
            if let Some(r) = rollout
                && rollout::covers(r.effective_percent(now), rollout::bucket(&r.salt, &i.machine_id))
            {
                counts.covered += 1;
            }
            let tag = i.tag.as_deref();
            match (tag, rollout) {
                (Some(tag), _) if tag == pointer.tag => counts.on_stable += 1,
                (Some(tag), Some(r)) if tag == r.tag => counts.on_target += 1,
                _ => counts.on_other += 1,
            }
            if let Some(r) = rollout {
                counts.failed += u64::from(i.status == Status::Failed && tag == Some(r.tag.as_str()));
                counts.rolled_back += u64::from(failed_back_from(i, r));
            }
            counts.stale += u64::from(i.stale);
        }
        Standing {
            pointer: name.to_owned(),
            serial: pointer.serial,
            stable: pointer.tag.clone(),
            target: rollout.map(|r| r.tag.clone()),
            percent,
            halted: rollout.is_some_and(|r| r.halted),
            waves: rollout.and_then(|r| r.waves.clone()),
            instances: counts,
        }
    }

    fn failures(&self) -> u64 {
        self.instances.failed + self.instances.rolled_back
    }
}

/// Whether `instance` rolled back from the rollout's target: just now (status
/// `rolled_back`), or earlier and still (a later run that did not try it again).
fn failed_back_from(instance: &Instance, rollout: &Rollout) -> bool {
    instance.rolled_back_from.as_deref() == Some(rollout.tag.as_str())
}

/// The pointer and the reports of `env`, read together.
async fn standing(
    config: &Config,
    store: &Store,
    env: &str,
    stale: Duration,
) -> anyhow::Result<(String, Pointer, Fleet, Standing)> {
    let name = pointer_name(&config.deploy.pointer, env)?;
    let pointer = Pointer::load(store, &name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no pointer {}", store.url_of(&layout::pointer(&name))))?;
    let scope = fleet::Scope {
        environment: Some(env.to_owned()),
        role: None,
        stale,
        instances: true,
        pointer_template: config.deploy.pointer.clone(),
        keys: crate::trust::Keys::from_config(&config.trust)?,
        now: SystemTime::now(),
    };
    let fleet = fleet::read(store, &scope, |_| {}).await?;
    let standing = Standing::of(&name, &pointer, &fleet, release::clock());
    Ok((name, pointer, fleet, standing))
}

async fn status(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    env: &str,
    stale: Duration,
) -> anyhow::Result<Exit> {
    let (_, _, _, standing) = standing(config, store, env, stale).await?;
    if global.json {
        print_json(&standing)?;
        return Ok(Exit::Ok);
    }
    print_standing(&standing)?;
    Ok(Exit::Ok)
}

fn print_standing(s: &Standing) -> anyhow::Result<()> {
    let c = &s.instances;
    let mut rows = vec![(format!("on {} (stable)", s.stable), c.on_stable)];
    match (&s.target, s.percent) {
        (Some(target), Some(percent)) => {
            let halted = if s.halted { ", halted" } else { "" };
            let waves = s
                .waves
                .as_ref()
                .map(|w| {
                    let spec: Vec<String> = w.iter().map(|w| format!("{}@{}", w.percent, w.after)).collect();
                    format!(" (waves {})", spec.join(","))
                })
                .unwrap_or_default();
            outln!(
                "pointer {} (serial {}): stable {}, rolling out {target} to {percent}%{waves}{halted}",
                s.pointer,
                s.serial,
                s.stable
            );
            outln!(
                "{} instances known; {percent}% of them is {} by the formula",
                c.known,
                c.covered
            );
            rows.push((format!("on {target} (target)"), c.on_target));
        }
        _ => {
            outln!(
                "pointer {} (serial {}): {} for everyone, no rollout",
                s.pointer,
                s.serial,
                s.stable
            );
            outln!("{} instances known", c.known);
        }
    }
    rows.extend([
        ("on anything else".to_owned(), c.on_other),
        ("failed on the target".to_owned(), c.failed),
        ("rolled back from it".to_owned(), c.rolled_back),
        ("stale".to_owned(), c.stale),
    ]);
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, count) in rows {
        outln!("  {label:width$}  {count:>6}");
    }
    Ok(())
}

/// `rollout set`: a fixed percentage; growing is refused while more than
/// `max_failures` instances failed the target, unless forced.
async fn set(
    op: &Op<'_>,
    env: &str,
    name: &str,
    percent: f64,
    max_failures: u64,
    force: bool,
) -> anyhow::Result<release::Moved> {
    let (config, store, author) = (op.config, op.store, op.author);
    let pointer = Pointer::load(store, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no pointer {}", store.url_of(&layout::pointer(name))))?;
    let current = rollout::of(&pointer)?.effective_percent(release::clock());
    // Only growing needs the reports: shrinking is always allowed.
    let mut retry = false;
    if percent > current {
        let (_, _, _, standing) = standing(config, store, env, Duration::from_secs(2 * 3600)).await?;
        if standing.failures() > max_failures && !force {
            anyhow::bail!(
                "not growing the rollout of {} from {current}% to {percent}%: {} instances failed it or rolled back \
                 from it (--max-failures {max_failures}); halt or abort it, or --force",
                standing.target.as_deref().unwrap_or("-"),
                standing.failures()
            );
        }
        // Growing past failures on purpose is a retry for the instances that failed.
        retry = standing.failures() > max_failures;
        check_release_of(store, name, Action::Set { percent, retry }).await?;
    }
    edit_pointer(store, name, author, |current| {
        Ok(rollout::apply(
            current,
            Action::Set { percent, retry },
            release::clock(),
        )?)
    })
    .await
}

/// Refuses a change that would have instances run a release that cannot be had: the
/// tag `action` gives more instances (the target for set, resume and finish, the stable
/// tag for abort) must have its manifest and archive in the store, as the pointer
/// names them, as `promote` requires.
async fn check_release_of(store: &crate::store::Store, name: &str, action: Action) -> anyhow::Result<()> {
    let Some(pointer) = Pointer::load(store, name).await? else {
        return Ok(());
    };
    let Some(r) = &pointer.rollout else {
        return Ok(());
    };
    let (tag, sha256, size) = match action {
        Action::Set { .. } | Action::Resume | Action::Finish => (&r.tag, &r.sha256, r.size),
        Action::Abort => (&pointer.tag, &pointer.sha256, pointer.size),
        Action::Halt => return Ok(()),
    };
    let manifest = release::Manifest::load_complete(store, tag)
        .await
        .map_err(|err| anyhow::anyhow!("not changing pointer {name}: {}", crate::error::one_line(&err)))?;
    if manifest.sha256 != *sha256 || manifest.size != size {
        anyhow::bail!(
            "not changing pointer {name}: it names {tag} with sha256 {sha256} ({size} bytes), but its manifest \
             says {} ({} bytes)",
            manifest.sha256,
            manifest.size
        );
    }
    Ok(())
}

async fn act(op: &Op<'_>, env: &str, action: Action) -> anyhow::Result<Exit> {
    let (global, config, store, author) = (op.global, op.config, op.store, op.author);
    let name = pointer_name(&config.deploy.pointer, env)?;
    check_release_of(store, &name, action).await?;
    let moved = edit_pointer(store, &name, author, |current| {
        Ok(rollout::apply(current, action, release::clock())?)
    })
    .await?;
    show(global, &name, &moved.pointer)
}

/// Prints the pointer as the change left it.
fn show(global: &GlobalArgs, name: &str, pointer: &Pointer) -> anyhow::Result<Exit> {
    if global.json {
        print_json(&json!({"name": name, "pointer": pointer}))?;
        return Ok(Exit::Ok);
    }
    match &pointer.rollout {
        Some(r) => {
            let halted = if r.halted { ", halted" } else { "" };
            outln!(
                "pointer {name} -> {} at serial {}, rolling out {} to {}%{halted}",
                pointer.tag,
                pointer.serial,
                r.tag,
                r.effective_percent(release::clock())
            );
        }
        None => outln!(
            "pointer {name} -> {} at serial {}, no rollout",
            pointer.tag,
            pointer.serial
        ),
    }
    Ok(Exit::Ok)
}

/// `rollout watch`: each step set, baked, and checked against the reports of the
/// instances it covers: all of them reporting the target, ok and not stale, and no
/// more than `max_failures` failed or rolled back. At 100 % the target becomes stable;
/// on failures the rollout is halted and the command exits 1. Someone else's halt,
/// abort or new rollout meanwhile stops the watch (exit 1) without undoing it.
async fn watch(
    op: &Op<'_>,
    env: &str,
    steps: &[f64],
    bake: Duration,
    max_failures: u64,
) -> anyhow::Result<Exit> {
    let (global, config, store, author) = (op.global, op.config, op.store, op.author);
    if steps.windows(2).any(|w| w[1] <= w[0]) {
        return Err(BadInput(format!("--steps must rise: {steps:?}")).into());
    }
    let name = pointer_name(&config.deploy.pointer, env)?;
    let event = |value: serde_json::Value| -> anyhow::Result<()> {
        if global.json {
            outln!("{value}");
        }
        Ok(())
    };
    let pointer = Pointer::load(store, &name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no pointer {}", store.url_of(&layout::pointer(&name))))?;
    let watched = rollout::of(&pointer)?.clone();
    // Acts on the pointer only while it still carries the rollout being watched.
    let change = |action: Action| {
        let (watched, name) = (&watched, &name);
        async move {
            check_release_of(store, name, action).await?;
            edit_pointer(store, name, author, move |current| {
            match &current.rollout {
                Some(r) if r.tag == watched.tag && r.started_at == watched.started_at && !r.halted => {}
                _ => anyhow::bail!(
                    "the rollout of {} was halted, replaced or ended while it was watched; the watch stops here",
                    watched.tag
                ),
            }
            Ok(rollout::apply(current, action, release::clock())?)
        })
            .await
        }
    };
    let halt = |percent: f64, why: String| {
        let change = &change;
        async move {
            change(Action::Halt).await?;
            eprintln!("halted at {percent}%: {why}");
            event(json!({"event": "halted", "percent": percent, "reason": why}))?;
            anyhow::Ok(Exit::Failed)
        }
    };
    // Failures from before the watch stop it at once; later ones are seen after each bake.
    let (_, _, _, before) = standing(config, store, env, Duration::from_secs(2 * 3600)).await?;
    if before.failures() > max_failures {
        let why = format!(
            "{} instances failed {} or rolled back from it",
            before.failures(),
            watched.tag
        );
        return halt(watched.effective_percent(release::clock()), why).await;
    }
    for (n, &percent) in steps.iter().enumerate() {
        change(Action::Set {
            percent,
            retry: false,
        })
        .await?;
        eprintln!(
            "step {}/{}: {percent}%, baking {}",
            n + 1,
            steps.len(),
            humantime::format_duration(bake)
        );
        event(json!({"event": "step", "step": n + 1, "percent": percent}))?;
        tokio::time::sleep(bake).await;
        let (_, _, fleet, standing) = standing(config, store, env, Duration::from_secs(2 * 3600)).await?;
        let (covered, why) = baked(&fleet, &standing, &watched, percent, env, max_failures);
        if let Some(why) = why {
            return halt(percent, why).await;
        }
        eprintln!(
            "step {}/{}: {} instances at {percent}%, all on {}",
            n + 1,
            steps.len(),
            covered,
            watched.tag
        );
        event(json!({"event": "baked", "step": n + 1, "percent": percent, "instances": covered}))?;
    }
    if steps.last() == Some(&100.0) {
        change(Action::Finish).await?;
        eprintln!("finished: {} is the stable tag", watched.tag);
        event(json!({"event": "finished"}))?;
    }
    Ok(Exit::Ok)
}

/// After a step's bake: how many instances the step covers, and why the rollout must
/// halt, if it must. An instance that moved in at an earlier step reported then; it
/// only has to be fresh (not stale) and still on the target.
fn baked(
    fleet: &Fleet,
    standing: &Standing,
    watched: &Rollout,
    percent: f64,
    env: &str,
    max_failures: u64,
) -> (usize, Option<String>) {
    let covered: Vec<&Instance> = fleet
        .instances
        .iter()
        .filter(|i| rollout::covers(percent, rollout::bucket(&watched.salt, &i.machine_id)))
        .collect();
    let behind = covered
        .iter()
        .filter(|i| i.stale || i.status != Status::Ok || i.tag.as_deref() != Some(watched.tag.as_str()))
        .count();
    let why = if fleet.instances.is_empty() {
        Some(format!(
            "no instance of {env} has a report: nothing shows the target works"
        ))
    } else if standing.failures() > max_failures {
        Some(format!(
            "{} instances failed {} or rolled back from it (--max-failures {max_failures})",
            standing.failures(),
            watched.tag
        ))
    } else if behind > 0 {
        Some(format!(
            "{behind} of the {} instances at {percent}% do not report running {} (or their reports are stale)",
            covered.len(),
            watched.tag
        ))
    } else {
        None
    };
    (covered.len(), why)
}
