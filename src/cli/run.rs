//! `bootlace run`, `plan` and `status`: the boot flow, its dry run, and its record.

use std::path::Path;

use serde_json::json;

use super::{GlobalArgs, print_json, runtime};
use crate::error::Exit;
use crate::report::{Report, Status};
use crate::{deploy, identity, init, release, store};

pub fn run(global: &GlobalArgs) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let ran = runtime.block_on(crate::run::boot(
        &config,
        super::progress_bar(global, "deploying"),
        global.json,
    ))?;
    if global.json {
        print_json(&ran.report)?;
    } else {
        outln!("{}", ran.report.summary());
    }
    if let Some(error) = &ran.report.error {
        eprintln!(
            "{}: {error}",
            if matches!(ran.report.status, Status::Degraded | Status::RolledBack) {
                "warning"
            } else {
                "error"
            }
        );
    }
    Ok(ran.exit)
}

pub fn agent(global: &GlobalArgs, once: bool) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let exit = runtime.block_on(crate::agent::run(&config, once, global.json))?;
    // With --once --json: the report as it stands after the check.
    if once && global.json {
        let state = crate::deploy::state::StateDir::at(&config.deploy.state_dir);
        if let Some(report) = Report::load(state.root())? {
            print_json(&report)?;
        }
    }
    Ok(exit)
}

pub fn plan(global: &GlobalArgs) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    // Read-only looks: nothing in the state dir is created or locked.
    let state = crate::deploy::state::StateDir::at(&config.deploy.state_dir);
    let (identity, target, arrival) = runtime.block_on(async {
        let identity = identity::resolve(&config.identity, &config.identity.source).await?;
        let store = store::open(&config.store, identity.credentials.as_ref(), store::Access::Read)?;
        // Checked as a run would, but nothing is recorded: plan changes nothing.
        let trust = crate::trust::Trust::for_instance(&config.trust, &config.deploy.state_dir, false)?;
        let target = deploy::target(&config.deploy, &identity, &store, trust.as_ref()).await?;
        let manifest = &target.manifest;
        let arrival = match state.has_exactly(&manifest.tag, &manifest.sha256) {
            true => None,
            false => Some(deploy::delta::preview(&config.deploy, &state, &store, manifest).await),
        };
        anyhow::Ok((identity, target, arrival))
    })?;
    let manifest = &target.manifest;
    let pointer = release::pointer_name_for(&config.deploy.pointer, &identity)?;
    let release_dir = state.release(&manifest.tag);
    let present = arrival.is_none();
    let current = state.current();
    let candidates = init::candidates(&config.init, &identity, &release_dir)?;
    let would_run = present.then(|| candidates.iter().find(|c| c.present)).flatten();
    let runner = would_run.and_then(|c| init::readiness(&c.runner));
    // Names and sources only: plan fetches nothing.
    let secrets = crate::secrets::plan(&config.secrets, &identity)?;
    let secrets_dir = (!secrets.is_empty()).then(|| crate::secrets::dir_note(&config.secrets));
    if global.json {
        let listed: Vec<_> = candidates
            .iter()
            .map(|c| json!({"script": c.script, "present": present.then_some(c.present)}))
            .collect();
        print_json(&json!({
            "identity": identity, "pointer": pointer, "tag": manifest.tag, "sha256": manifest.sha256,
            "present": present, "arrival": arrival, "current": current, "candidates": listed,
            "would_run": would_run.map(|c| &c.script), "runner": runner, "rollout": target.placement,
            "refused": target.refused, "secrets": secrets,
            "secrets_dir": secrets_dir.as_ref().map(|_| &config.secrets.dir),
        }))?;
        return Ok(Exit::Ok);
    }
    print_plan(
        &config,
        &identity,
        &pointer,
        &target,
        (arrival.as_ref(), current.as_deref()),
        &candidates,
        would_run,
    )?;
    if let Some(runner) = &runner {
        match (&runner.program, &runner.missing) {
            (_, Some(missing)) => outln!("runner     {}: {missing}", runner.name),
            (Some(program), None) => outln!(
                "runner     {}: {}{}",
                runner.name,
                program.display(),
                runner
                    .version
                    .as_ref()
                    .map_or(String::new(), |v| format!(" ({v})"))
            ),
            (None, None) => {}
        }
    }
    print_secrets(&secrets, secrets_dir.as_deref())?;
    Ok(Exit::Ok)
}

/// `plan --check`: the current release's playbook in check mode, under the lock.
pub fn plan_check(global: &GlobalArgs, exit_code: bool) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let state = crate::deploy::state::StateDir::open(&config.deploy.state_dir)
        .map_err(|e| anyhow::anyhow!("opening state dir {}: {e}", config.deploy.state_dir.display()))?;
    let _lock = state.lock(config.deploy.lock_timeout)?;
    let identity = runtime.block_on(identity::resolve(&config.identity, &config.identity.source))?;
    let flow = crate::run::Flow {
        config: &config,
        state: &state,
        identity: &identity,
        phase: init::Phase::Check,
        json: global.json,
    };
    let checked = flow.check_drift()?;
    if !checked.completed() {
        let failed = match checked.failed_tasks.first() {
            Some(task) => format!(" (task {task:?} failed)"),
            None => String::new(),
        };
        anyhow::bail!(
            "checking {}'s {}: ansible-playbook exited with {}{failed}",
            checked.tag,
            checked.script,
            checked.exit_code.map_or("no code".into(), |c| c.to_string())
        );
    }
    if global.json {
        let mut value = serde_json::to_value(&checked)?;
        value["drift"] = checked.drifted().into();
        print_json(&value)?;
    } else {
        outln!(
            "check      {}: {} ({}), {} ms",
            checked.tag,
            checked.script,
            checked.runner,
            checked.duration_ms
        );
        let total = checked.tasks.ok + checked.tasks.skipped + checked.tasks.failed;
        if checked.drifted() {
            outln!(
                "drift      {} of {total} tasks would change:",
                checked.tasks.changed
            );
            for task in &checked.changed_tasks {
                outln!("  {task}");
            }
            for path in &checked.paths {
                outln!("  path     {path}");
            }
        } else {
            outln!("drift      none: {total} tasks, none would change");
        }
    }
    Ok(if exit_code && checked.drifted() {
        Exit::Drift
    } else {
        Exit::Ok
    })
}

/// `plan`'s text: the identity, the pointer and what it names, the instance's place in
/// a rollout, and the init candidates with the one that would run.
fn print_plan(
    config: &crate::config::Config,
    identity: &identity::Identity,
    pointer: &str,
    target: &deploy::Target,
    (arrival, current): (Option<&deploy::delta::Preview>, Option<&str>),
    candidates: &[init::Candidate],
    would_run: Option<&init::Candidate>,
) -> anyhow::Result<()> {
    let manifest = &target.manifest;
    let present = arrival.is_none();
    outln!(
        "identity   {} ({} / {} / {})",
        identity.machine_id,
        show(&identity.environment),
        show(&identity.role),
        show(&identity.context)
    );
    let cached = if present {
        "present, no download"
    } else {
        "not present, would download"
    };
    outln!(
        "pointer    {pointer} -> {} ({cached}, {} bytes)",
        manifest.tag,
        manifest.size
    );
    match arrival {
        Some(deploy::delta::Preview::Delta { from, bytes }) => {
            outln!("arrival    delta from {from}: a pack of {bytes} bytes")
        }
        Some(deploy::delta::Preview::Full { bytes, why }) => {
            let why = why.as_ref().map_or(String::new(), |why| format!(" ({why})"));
            outln!("arrival    full download of {bytes} bytes{why}")
        }
        None => {}
    }
    if let Some(p) = &target.placement {
        let why = if p.is_in {
            format!("in: bucket {} < {}", p.bucket, (p.percent * 100.0).round())
        } else {
            format!("not in: bucket {} >= {}", p.bucket, (p.percent * 100.0).round())
        };
        outln!(
            "rollout    {} to {}% of instances; this one is {why}",
            p.target,
            p.percent
        );
    }
    if let Some(why) = &target.refused {
        outln!("refused    {why}");
    }
    outln!("current    {}", current.unwrap_or("-"));
    outln!("init       candidates under {}:", config.init.root);
    for candidate in candidates {
        let mark = match (present, candidate.present) {
            (false, _) => "unknown until deployed",
            (true, true) => "present",
            (true, false) => "missing",
        };
        let chosen = if would_run.is_some_and(|c| std::ptr::eq(c, candidate)) {
            "  <- would run"
        } else {
            ""
        };
        outln!("  {:50} {mark}{chosen}", candidate.script);
    }
    if present && would_run.is_none() {
        outln!("no init script would run");
    }
    Ok(())
}

/// The secrets a run would fetch, and into which dir.
fn print_secrets(secrets: &[crate::secrets::Planned], dir: Option<&str>) -> anyhow::Result<()> {
    if let Some(note) = dir {
        outln!("secrets    {} into {note}:", secrets.len());
        let width = secrets.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for secret in secrets {
            outln!("  {:width$}  {}", secret.name, secret.source);
        }
    }
    Ok(())
}

pub fn status(global: &GlobalArgs, wait: bool) -> anyhow::Result<Exit> {
    let config = global.settings()?;
    let state_dir = &config.deploy.state_dir;
    if wait {
        wait_for_run(state_dir, longest_run(&config))?;
    }
    let report = Report::load(state_dir)?
        .ok_or_else(|| anyhow::anyhow!("no run recorded in {}", state_dir.display()))?;
    if global.json {
        print_json(&report)?;
    } else {
        outln!("{}", report.summary());
        outln!("  started {}, finished {}", report.started_at, report.finished_at);
        if let Some(error) = &report.error {
            outln!("  error: {error}");
        }
    }
    // As the run ended: its recorded code, or (in older reports) its status's.
    Ok(
        match (report.exit_code.and_then(Exit::from_code), report.status) {
            (Some(exit), _) => exit,
            (None, Status::Ok) => Exit::Ok,
            (None, Status::Failed) => Exit::Failed,
            (None, Status::Degraded) => Exit::Degraded,
            (None, Status::RolledBack) => Exit::RolledBack,
        },
    )
}

/// Waits while a run holds the state dir's lock, at most as long as a run can take;
/// returns at once when none does.
fn wait_for_run(state_dir: &Path, timeout: std::time::Duration) -> anyhow::Result<()> {
    // No lock file: nothing has ever run here, so nothing is running.
    if !state_dir.join("lock").exists() {
        return Ok(());
    }
    let state = crate::deploy::state::StateDir::at(state_dir);
    drop(state.lock(timeout)?);
    Ok(())
}

/// The longest a run can hold the lock: each of its steps is bounded by a setting.
fn longest_run(config: &crate::config::Config) -> std::time::Duration {
    config.deploy.lock_timeout
        + config.identity.deadline
        + config.deploy.timeout
        + config.init.timeout
        + config.store.deadline
}

fn show(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}
