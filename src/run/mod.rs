//! The flow (DESIGN §1, §6.2), one for both triggers: identity → target → fetch →
//! switch → init → health → commit or roll back → report. `bootlace run` passes
//! through it once at boot; the agent passes through its second half whenever the
//! pointer names something new. Every pass ends with a report, whatever failed:
//!
//! - a target that cannot be deployed, for any reason, while a verified release is
//!   current degrades the run (exit 3): the current release's init runs instead;
//! - a target whose init or health check fails is rolled back to the last good
//!   release (exit 4), and not tried again until the pointer's serial changes;
//! - only with nothing to fall back to does the run fail (exit 1, or 2 for bad input).

mod drift;
mod record;

use std::time::Instant;

use tracing::{info, warn};

use crate::config::Config;
use crate::deploy::state::{Failed, StateDir};
use crate::deploy::{self, Target};
use crate::identity::{self, Identity};
use crate::init::{self, Phase};
use crate::report::{self, RolledBackFrom, Trigger};
use crate::store::{self, Store, StoreError};
use crate::{health, release, secrets};

pub use drift::Checked;
pub(crate) use record::upload_report;
pub use record::{Ran, Run};

/// Runs the boot flow. Only a state dir that cannot be opened or locked is an `Err`;
/// everything after that ends in a report.
/// `json`: stdout carries only the report, so the init script's stdout goes to stderr.
pub async fn boot(config: &Config, progress: deploy::fetch::Progress, json: bool) -> anyhow::Result<Ran> {
    let state = StateDir::open(&config.deploy.state_dir)
        .map_err(|e| anyhow::anyhow!("opening state dir {}: {e}", config.deploy.state_dir.display()))?;
    let _lock = state.lock(config.deploy.lock_timeout)?;
    let mut run = Run::new(Trigger::Boot);
    let identity = match run
        .time(
            |t| &mut t.identity,
            identity::resolve(&config.identity, &config.identity.source),
        )
        .await
    {
        Ok(identity) => identity,
        Err(err) => return Ok(run.finish(config, &state, None, None, Err(err)).await),
    };
    run.note_identity(&identity);
    // The secrets are fetched while the pointer is read: neither waits for the other.
    let (store, target, fetched) =
        match store::open(&config.store, identity.credentials.as_ref(), store::Access::Read) {
            Ok(store) => {
                let (target, fetched) = tokio::join!(
                    read_target(config, &identity, &store, &mut run),
                    secrets::fetch(&config.secrets, &identity)
                );
                (Some(store), target, fetched)
            }
            Err(err) => (None, Err(err), secrets::fetch(&config.secrets, &identity).await),
        };
    if let Err(err) = run.provide_secrets(config, fetched) {
        return Ok(run
            .finish(config, &state, Some(&identity), store.as_ref(), Err(err))
            .await);
    }
    let flow = Flow {
        config,
        state: &state,
        identity: &identity,
        phase: Phase::Boot,
        json,
    };
    let target = match (&store, target) {
        (Some(store), Ok(target)) => Ok((store, target)),
        (_, Err(err)) => Err(err),
        (None, Ok(_)) => Err(anyhow::anyhow!("no store to deploy from")),
    };
    let result = flow.converge(&mut run, target, progress).await;
    let store = store.filter(|_| !run.store_unanswered);
    Ok(run
        .finish(config, &state, Some(&identity), store.as_ref(), result)
        .await)
}

/// The pointer and the manifest it names, within `deploy.timeout`: small reads have no
/// whole-request timeout of their own, only idle and retry bounds.
pub async fn read_target(
    config: &Config,
    identity: &Identity,
    store: &Store,
    run: &mut Run,
) -> anyhow::Result<Target> {
    let trust = crate::trust::Trust::for_instance(&config.trust, &config.deploy.state_dir, true)?;
    let reading = deploy::target(&config.deploy, identity, store, trust.as_ref());
    let target = tokio::time::timeout(config.deploy.timeout, reading)
        .await
        .unwrap_or_else(|_| {
            anyhow::bail!(
                "reading the pointer and manifest: not finished after {} (deploy.timeout)",
                humantime::format_duration(config.deploy.timeout)
            )
        });
    if let Ok(target) = &target {
        run.checked_at = Some(release::now());
        run.rollout.clone_from(&target.placement);
        if let Some(why) = &target.refused {
            run.warn(why.clone());
        }
    }
    target
}

/// What one pass needs besides the run's record.
pub struct Flow<'a> {
    pub config: &'a Config,
    pub state: &'a StateDir,
    pub identity: &'a Identity,
    /// `Boot` for `run`, `Update` for the agent.
    pub phase: Phase,
    pub json: bool,
}

impl Flow<'_> {
    /// What init and the health check run with: DESIGN §5's variables, and
    /// `BOOTLACE_SECRETS_DIR` when secrets are configured.
    fn environment(
        &self,
        tag: &str,
        release: &std::path::Path,
        phase: Phase,
        previous: Option<&str>,
    ) -> std::collections::BTreeMap<String, String> {
        let mut env = init::environment(self.identity, tag, release, phase, previous);
        if !self.config.secrets.items.is_empty() {
            let dir = self.config.secrets.dir.display().to_string();
            env.insert("BOOTLACE_SECRETS_DIR".into(), dir);
        }
        env
    }

    /// A boot run passes SIGTERM on to the script it runs; the agent lets the step in
    /// progress finish.
    fn forward_signals(&self) -> bool {
        self.phase == Phase::Boot
    }
}

impl Flow<'_> {
    /// Brings the instance to `target` (or, when it cannot be had, keeps what runs),
    /// recording every step in `run`. The caller holds the state dir's lock.
    pub async fn converge(
        &self,
        run: &mut Run,
        target: anyhow::Result<(&Store, Target)>,
        progress: deploy::fetch::Progress,
    ) -> anyhow::Result<()> {
        run.previous_tag = self.state.current();
        let deployed = match target {
            Ok((store, target)) => self.deploy(run, store, target, progress).await,
            Err(err) => Err(err),
        };
        match deployed {
            Ok(target) => {
                self.start(run, &target.manifest.tag, Some(target.pointer.serial))
                    .await
            }
            Err(err) => self.keep_current(run, err).await,
        }
    }

    /// After a crash between switching to `tag` and committing it (`current` is not
    /// `good`): checks `tag`'s health and commits it or rolls back. Without a health
    /// check configured, whether its init succeeded is unknown, so it runs again.
    /// `serial`: the pointer's serial when it names `tag`, to record a failure under.
    pub async fn recover(
        &self,
        run: &mut Run,
        tag: &str,
        good: Option<&str>,
        serial: Option<u64>,
    ) -> anyhow::Result<()> {
        self.end_orphaned_init();
        run.previous_tag = good.map(str::to_owned);
        let good_name = good.unwrap_or("none yet");
        run.tag = Some(tag.to_owned());
        run.sha256 = self.state.sha256_of(tag);
        // Only an init seen to finish is checked as it is; one that never finished (a
        // crash or kill during it, or before it started) runs again.
        let finished = self
            .state
            .init_record()
            .is_some_and(|r| r.tag == tag && r.finished);
        if !finished {
            warn!(
                "{tag} is current but its init was not seen to finish (good is {good_name}): running it again"
            );
            return self.start(run, tag, serial).await;
        }
        warn!("{tag} is current but was never committed (good is {good_name}): checking it");
        let release = self.state.release(tag);
        let env = self.environment(tag, &release, self.phase, good);
        let Some(checked) = health::check(&self.config.health, &release, &env, self.forward_signals()).await
        else {
            return self.start(run, tag, serial).await;
        };
        if let Some(signal) = &checked.stopped_by {
            run.stopped = true;
            run.health = Some(checked.clone());
            anyhow::bail!(
                "stopped: bootlace got {signal} during {tag}'s health check; {tag} stays uncommitted"
            );
        }
        let (ok, reason) = (checked.ok, health::reason(&checked));
        run.health = Some(checked);
        if ok {
            self.commit(tag);
            return Ok(());
        }
        let failure = anyhow::anyhow!("{tag}: {reason}");
        match (self.config.health.rollback, good.filter(|good| *good != tag)) {
            (true, Some(good)) => self.roll_back(run, tag, good, serial, failure).await,
            _ => Err(failure),
        }
    }

    /// Fetches and switches to the target, unless it failed before under the same
    /// pointer serial.
    async fn deploy(
        &self,
        run: &mut Run,
        store: &Store,
        target: Target,
        progress: deploy::fetch::Progress,
    ) -> anyhow::Result<Target> {
        let (tag, serial) = (&target.manifest.tag, target.pointer.serial);
        if let Some(failed) = self.state.failed()
            && failed.tag == *tag
            && failed.serial == serial
            && self.state.current().as_deref() != Some(tag)
        {
            // Still rolled back from it: the report keeps saying so (the run itself
            // is degraded, not a new rollback).
            run.kept_back_from = Some(RolledBackFrom {
                tag: tag.clone(),
                sha256: Some(target.manifest.sha256.clone()),
                reason: failed.reason.clone(),
            });
            anyhow::bail!(
                "{tag} failed at pointer serial {serial} ({}) and is not tried again until the pointer changes",
                failed.reason
            );
        }
        let started = Instant::now();
        run.previous_link = self.state.previous();
        let hold = (self.phase == Phase::Update).then_some(self.config.agent.hold_file.as_path());
        let deployed = deploy::deploy(
            &self.config.deploy,
            self.state,
            store,
            &target.manifest,
            progress,
            hold,
        )
        .await;
        run.timings.deploy = started.elapsed().as_millis() as u64;
        let deployed = deployed.inspect_err(|err| run.store_unanswered = StoreError::unanswered(err))?;
        run.tag = Some(deployed.tag);
        run.sha256 = Some(deployed.sha256);
        run.deployed = deployed.deployed;
        run.arrival = deployed.arrival;
        Ok(target)
    }

    /// The target could not be had: the current release's init runs instead and the
    /// run ends degraded, or fails with nothing current.
    async fn keep_current(&self, run: &mut Run, err: anyhow::Error) -> anyhow::Result<()> {
        run.store_unanswered |= StoreError::unanswered(&err);
        let Some(current) = self.state.current() else {
            return Err(err);
        };
        if let Some(held) = err.downcast_ref::<deploy::Held>() {
            // The agent's hold, seen right before the switch: nothing is wrong.
            info!("{held}");
            run.held = true;
            run.warn(held.to_string());
            run.tag = Some(current.clone());
            run.sha256 = self.state.sha256_of(&current);
            return Ok(());
        }
        let why = crate::error::one_line(&err);
        run.degraded = Some(match run.store_unanswered {
            true => format!("store unreachable: {why}"),
            false => format!("target not deployed: {why}"),
        });
        run.tag = Some(current.clone());
        run.sha256 = self.state.sha256_of(&current);
        if self.phase == Phase::Update {
            // The agent: the current release is running already; it is left alone.
            warn!("{why}; keeping {current} (degraded)");
            return Ok(());
        }
        warn!("{why}; running the current release {current} (degraded)");
        self.start(run, &current, None).await
    }

    /// Runs `tag`'s init and health check; commits it as good, or rolls back.
    /// `serial`: the pointer's serial, when `tag` is what it names.
    async fn start(&self, run: &mut Run, tag: &str, serial: Option<u64>) -> anyhow::Result<()> {
        let failure = match self.init_and_health(run, tag, self.phase).await {
            Ok(()) => {
                self.commit(tag);
                return Ok(());
            }
            Err(failure) => failure,
        };
        // Told to stop (SIGTERM): no time to start another release.
        let good = self.state.good().filter(|good| good != tag && !run.stopped);
        let (Some(good), true) = (good, self.config.health.rollback) else {
            return Err(failure);
        };
        self.roll_back(run, tag, &good, serial, failure).await
    }

    /// Switches back to `good` after `failed_tag` failed, and starts it again.
    async fn roll_back(
        &self,
        run: &mut Run,
        failed_tag: &str,
        good: &str,
        serial: Option<u64>,
        failure: anyhow::Error,
    ) -> anyhow::Result<()> {
        // A health check's output can hold what init was given.
        let reason = run.scrub(&crate::error::one_line(&failure));
        warn!("{failed_tag} failed: {reason}; rolling back to {good}");
        self.state
            .roll_back_to(good, run.previous_link.as_deref())
            .map_err(|e| anyhow::anyhow!("rolling back to {good}: {e}; ({reason})"))?;
        if let Some(serial) = serial {
            let failed = Failed {
                tag: failed_tag.to_owned(),
                serial,
                reason: reason.clone(),
                at: release::now(),
            };
            if let Err(err) = self.state.record_failed(&failed) {
                warn!("recording that {failed_tag} failed: {err}");
            }
        }
        run.rolled_back_from = Some(RolledBackFrom {
            tag: failed_tag.to_owned(),
            sha256: run.sha256.take(),
            reason: reason.clone(),
        });
        run.tag = Some(good.to_owned());
        run.sha256 = self.state.sha256_of(good);
        run.deployed = false;
        run.health = None;
        self.init_and_health(run, good, Phase::Rollback)
            .await
            .map_err(|err| {
                anyhow::anyhow!("rolled back to {good} after {reason}, but {good} failed too: {err:#}")
            })
    }

    /// Records `tag` as good; a failure to do so is logged, never fatal.
    fn commit(&self, tag: &str) {
        if let Err(err) = self.state.mark_good(tag) {
            warn!("recording {tag} as good: {err}");
        }
    }

    /// `tag`'s init, then its health check: the first failure.
    async fn init_and_health(&self, run: &mut Run, tag: &str, phase: Phase) -> anyhow::Result<()> {
        let started = Instant::now();
        let release = self.state.release(tag);
        let previous = run.previous_tag.clone();
        let env = self.environment(tag, &release, phase, previous.as_deref());
        let result = self.choose_and_run(run, tag, &env);
        run.timings.init = started.elapsed().as_millis() as u64;
        result?;
        let Some(checked) = health::check(&self.config.health, &release, &env, self.forward_signals()).await
        else {
            return Ok(());
        };
        let ok = checked.ok;
        let reason = health::reason(&checked);
        let stopped = checked.stopped_by.clone();
        run.health = Some(checked);
        if let Some(signal) = stopped {
            // Neither healthy nor failed: left uncommitted, and checked again by the
            // agent's recovery (or the next boot's run).
            run.stopped = true;
            anyhow::bail!(
                "stopped: bootlace got {signal} during {tag}'s health check; {tag} stays uncommitted"
            );
        }
        if ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{tag}: {reason}"))
        }
    }

    /// Ends what is left of an init whose bootlace was killed while it ran (its process
    /// group, recorded in the state dir), so that two releases' inits never run at once.
    pub fn end_orphaned_init(&self) {
        let Some(record) = self.state.init_record() else {
            return;
        };
        let Some(group) = record
            .group
            .filter(|_| !record.finished && record.boot_id == crate::process::boot_id())
        else {
            return;
        };
        if crate::process::end_group(group) {
            warn!(
                "ended what was left of {}'s init (process group {group}): the bootlace that ran it stopped before it finished",
                record.tag
            );
        }
    }

    /// Records that `tag`'s init starts (`group` once known) or has finished.
    fn record_init(&self, tag: &str, group: Option<u32>, finished: bool) {
        let record = crate::deploy::state::InitRecord {
            tag: tag.to_owned(),
            group,
            boot_id: crate::process::boot_id(),
            finished,
        };
        if let Err(err) = self.state.record_init(&record) {
            warn!("recording {tag}'s init in {}: {err}", self.state.root().display());
        }
    }

    /// Runs the first present candidate; what it did goes into the run's record. No
    /// candidate present is a loud warning, or a failure with `init.required`.
    fn choose_and_run(
        &self,
        run: &mut Run,
        tag: &str,
        env: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let config = self.config;
        let release = self.state.release(tag);
        self.end_orphaned_init();
        self.record_init(tag, None, false);
        let candidates = init::candidates(&config.init, self.identity, &release)?;
        let Some(chosen) = candidates.iter().find(|c| c.present) else {
            self.record_init(tag, None, true);
            let tried: Vec<&str> = candidates.iter().map(|c| c.script.as_str()).collect();
            let why = format!(
                "{} {tag}: none of {} exists under {}",
                report::NO_INIT_SCRIPT,
                tried.join(", "),
                config.init.root
            );
            if config.init.required {
                anyhow::bail!("{why} (init.required)");
            }
            warn!("{why}");
            run.warnings.push(why);
            return Ok(());
        };
        let what = init::what(&chosen.runner);
        info!("running init {what} {}", chosen.script);
        let started = |group: u32| self.record_init(tag, Some(group), false);
        let how = crate::process::How {
            timeout: config.init.timeout,
            quiet_stdout: self.json,
            discard_stdout: false,
            forward_signals: self.forward_signals(),
            what: if what == "playbook" {
                "init playbook"
            } else {
                "init script"
            },
            started: Some(&started),
        };
        let options = init::Options {
            work: &self.state.root().join("ansible"),
            mode: init::ansible::Mode::Apply,
        };
        let ran = init::run(&config.init, chosen, &release, env, &how, &options)?;
        let outcome = ran.outcome;
        // Stopped by a signal, it did not finish: recovery runs it again.
        self.record_init(tag, None, outcome.stopped_by.is_none());
        let succeeded = ran.succeeded;
        let (timed_out, code, stopped_by) = (outcome.timed_out, outcome.exit_code, outcome.stopped_by);
        let results = ran.results.unwrap_or_default();
        run.init = Some(report::Init {
            script: outcome.script,
            exit_code: outcome.exit_code,
            duration_ms: outcome.duration_ms,
            output_tail: outcome.output_tail,
            runner: (chosen.runner.kind != init::Kind::Script).then_some(ran.runner),
            tasks: (chosen.runner.kind != init::Kind::Script && what == "playbook").then_some(results.tasks),
            changed_tasks: results.changed,
            failed_tasks: results.failed,
        });
        if let Some(signal) = stopped_by {
            run.stopped = true;
            anyhow::bail!(
                "stopped: bootlace got {signal} while init {what} {} ran, and passed it on",
                chosen.script
            );
        }
        match (succeeded, timed_out) {
            (true, _) => Ok(()),
            (false, true) => anyhow::bail!(
                "init {what} {} timed out after {}",
                chosen.script,
                humantime::format_duration(config.init.timeout)
            ),
            (false, false) => {
                anyhow::bail!("init {what} {} exited with {}", chosen.script, code.unwrap_or(-1))
            }
        }
    }
}
