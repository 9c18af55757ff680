//! `bootlace agent` (DESIGN §6.2): keeps a running instance on the release its
//! pointer names, without reboots. It resolves the identity once (again on SIGHUP),
//! then loops: wait `agent.interval` plus a random share of `agent.jitter`; read the
//! pointer with `If-None-Match` on the last ETag (a 304 costs nothing and changes
//! nothing); when the pointer names something new, take the state dir's lock and pass
//! through the same flow as a boot run ([`crate::run::Flow`]) with
//! `BOOTLACE_PHASE=update`, then report. Store errors back off as
//! min(interval, 15 s × 2^n) while the current release keeps running. SIGTERM ends the
//! wait at once; a step in progress finishes first (each is bounded by its own
//! timeouts).

pub mod config;
mod drift;
mod report;
mod service;

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::deploy::state::StateDir;
use crate::deploy::{self, Target};
use crate::error::Exit;
use crate::identity::{self, Identity};
use crate::init::Phase;
use crate::release::pointer::{Checked, Pointer};
use crate::report::Trigger;
use crate::run::{Flow, Run};
use crate::secrets;
use crate::store::{self, Store, StoreError, layout};

use service::{LongStep, Stop, StopSeen, Woke, notify, wait_for, watchdog};

/// The first backoff after a store error; it doubles up to `agent.interval`.
const BACKOFF: Duration = Duration::from_secs(15);

/// Runs the agent until SIGTERM (or for one check with `once`). The exit code: 0, or
/// with `once` that of the check (0 nothing to do or updated, 1, 3 or 4), or of the
/// start-up recovery when the check itself had nothing to say.
/// `json`: stdout is for a JSON report, so init scripts' stdout goes to stderr.
pub async fn run(config: &crate::config::Config, once: bool, json: bool) -> anyhow::Result<Exit> {
    let state = StateDir::open(&config.deploy.state_dir)
        .map_err(|e| anyhow::anyhow!("opening state dir {}: {e}", config.deploy.state_dir.display()))?;
    let _agent = state.agent_lock()?;
    let stop = Stop::watch(config)?;
    let stop_seen = stop.seen();
    let mut hangup = signal(SignalKind::hangup())?;
    let identity = identity::resolve(&config.identity, &config.identity.source).await?;
    let store = store::open(&config.store, identity.credentials.as_ref(), store::Access::Read)?;
    let trust = crate::trust::Trust::for_instance(&config.trust, &config.deploy.state_dir, true)?;
    let mut agent = Agent {
        trust,
        last_refusal: None,
        last_hold: None,
        reported: std::cell::Cell::new(false),
        stop: stop_seen,
        config,
        state,
        identity,
        store,
        e_tag: None,
        failures: 0,
        target: None,
        pointer_missing: false,
        last_pointer: None,
        placement: None,
        json,
        last_drift_refusal: None,
    };
    // Started: systemd's start timeout does not wait for a recovery or a first update,
    // which have bounds of their own (and widen the watchdog while they run).
    notify(&[sd_notify::NotifyState::Ready]);
    let recovered = stop.busy(agent.recover()).await?;
    if stop.requested() {
        return Ok(stopping(&stop, recovered));
    }
    let watchdog = watchdog();
    let mut next_drift = agent.next_drift();
    loop {
        agent.reported.set(false);
        let exit = stop.busy(agent.check()).await;
        // `--once` checks for drift too when drift checks are on.
        if next_drift.is_some_and(|at| once || std::time::Instant::now() >= at) && !stop.requested() {
            stop.busy(agent.drift()).await;
            next_drift = agent.next_drift();
        }
        if once {
            // As `status` would say: the check's exit when it wrote a report, else the
            // recovery's when that did something.
            let said = agent.reported.get() || recovered == Exit::Ok;
            return Ok(if said { exit } else { recovered });
        }
        if stop.requested() {
            return Ok(stopping(&stop, Exit::Ok));
        }
        // The next pointer check, or the next drift check when that comes first.
        let wait = match next_drift {
            Some(at) => agent
                .next_wait()
                .min(at.saturating_duration_since(std::time::Instant::now())),
            None => agent.next_wait(),
        };
        notify(&[sd_notify::NotifyState::Status(&agent.status_line(wait))]);
        match wait_for(&stop, &mut hangup, wait, watchdog).await {
            Woke::Timer => {}
            Woke::Hangup => agent.reload().await,
            Woke::Stop => return Ok(stopping(&stop, Exit::Ok)),
        }
    }
}

/// Says that the agent stops, and with what exit.
fn stopping(stop: &Stop, exit: Exit) -> Exit {
    info!("{}: stopping", stop.signal());
    notify(&[sd_notify::NotifyState::Stopping]);
    exit
}

struct Agent<'a> {
    config: &'a crate::config::Config,
    state: StateDir,
    identity: Identity,
    store: Store,
    /// The ETag of the pointer state last acted on.
    e_tag: Option<String>,
    /// Store errors in a row.
    failures: u32,
    /// What the pointer named at the last check, for the status line.
    target: Option<(String, u64)>,
    /// The pointer was missing at the last check (said once, not at every check).
    pointer_missing: bool,
    /// The pointer as last read, with its URL: a rollout's waves move with the clock
    /// while the pointer stays as it is.
    last_pointer: Option<(Pointer, String)>,
    /// This instance's place in the pointer's rollout at the last check.
    placement: Option<crate::release::rollout::Placement>,
    /// With `[trust] keys`: the rules every pointer and manifest must pass.
    trust: Option<crate::trust::Trust>,
    /// The last refusal reported, not reported again at every check.
    last_refusal: Option<String>,
    /// What the last check found while held, not reported again at every check.
    last_hold: Option<String>,
    /// A report was written since this was last cleared.
    reported: std::cell::Cell<bool>,
    /// Whether SIGTERM or SIGINT came.
    stop: StopSeen,
    json: bool,
    /// Why drift cannot be checked (no playbook init), said once.
    last_drift_refusal: Option<String>,
}

impl Agent<'_> {
    fn flow(&self) -> Flow<'_> {
        Flow {
            config: self.config,
            state: &self.state,
            identity: &self.identity,
            phase: Phase::Update,
            json: self.json,
        }
    }

    fn new_run(&self) -> Run {
        let mut run = Run::new(Trigger::Agent);
        run.note_identity(&self.identity);
        run.rollout.clone_from(&self.placement);
        run
    }

    /// On start: a switch that was never committed (a crash between switching and
    /// committing), or an init that was not seen to finish (the agent killed during
    /// it, a rollback's own init included), is dealt with before anything else. The
    /// exit of what it did (`Ok` when there was nothing to do).
    async fn recover(&mut self) -> anyhow::Result<Exit> {
        let Some(current) = self.state.current() else {
            return Ok(Exit::Ok);
        };
        // What needs it: a switch never committed, or an init of `current` that did
        // not finish (init.json says), a first boot's killed during init included.
        let needs = |state: &StateDir| {
            let record = state.init_record().filter(|r| r.tag == current);
            let unfinished = record.as_ref().is_some_and(|r| !r.finished);
            match state.good() {
                Some(good) => good != current || unfinished,
                // A first release whose init finished and failed stays as its run
                // reported it; one whose init was cut short runs it again.
                None => unfinished,
            }
        };
        if !needs(&self.state) {
            return Ok(Exit::Ok);
        }
        let _lock = self.state.lock(self.config.deploy.lock_timeout)?;
        // Decided again under the lock: a boot run may have settled it meanwhile; and
        // a stop asked for while waiting starts nothing.
        if self.stop.requested()
            || self.state.current().as_deref() != Some(current.as_str())
            || !needs(&self.state)
        {
            return Ok(Exit::Ok);
        }
        let good = self.state.good();
        let _step = LongStep::start(self.config);
        // The pointer's serial, if it still names that release: a failure is then
        // recorded under it, and not retried until it changes.
        let name = crate::release::pointer_name_for(&self.config.deploy.pointer, &self.identity)?;
        let serial = match Pointer::load(&self.store, &name).await {
            Ok(Some(pointer)) => {
                let assigned = pointer.assign(&self.identity.machine_id, crate::release::clock());
                (assigned.tag == current).then(|| pointer.applied(&assigned).serial)
            }
            _ => None,
        };
        let mut run = self.new_run();
        // Init and the health check may run again: the secrets are written afresh, and
        // their values kept out of the report. Without them, the files already there
        // serve.
        let fetched = secrets::fetch(&self.config.secrets, &self.identity).await;
        if let Err(err) = run.provide_secrets(self.config, fetched) {
            warn!(
                "{}; checking {current} with the secrets written before",
                crate::error::one_line(&err)
            );
        }
        let result = self
            .flow()
            .recover(&mut run, &current, good.as_deref(), serial)
            .await;
        Ok(self.finish(run, result).await)
    }

    /// One check, and an update when the pointer names something new.
    async fn check(&mut self) -> Exit {
        let name = match crate::release::pointer_name_for(&self.config.deploy.pointer, &self.identity) {
            Ok(name) => name,
            Err(err) => {
                warn!("{err}");
                return Exit::BadInput;
            }
        };
        let reading = async {
            match &self.trust {
                Some(trust) => trust.pointer(&self.store, &name, self.e_tag.as_deref()).await,
                None => Pointer::check(&self.store, &name, self.e_tag.as_deref()).await,
            }
        };
        let checked = match tokio::time::timeout(self.config.deploy.timeout, reading).await {
            Ok(checked) => checked,
            // No answer in time: an outage, backed off as one.
            Err(_) => Err(StoreError {
                refused: false,
                action: "reading",
                url: self.store.url_of(&layout::pointer(&name)),
                reason: "timed out (deploy.timeout)".into(),
            }
            .into()),
        };
        let (pointer, e_tag) = match checked {
            Ok(Checked::NotModified) => return self.unchanged(&name).await,
            Ok(Checked::Missing) => {
                self.failures = 0;
                if !self.pointer_missing {
                    let url = self.store.url_of(&layout::pointer(&name));
                    warn!(
                        "no pointer {url}: keeping {} until there is one",
                        self.current_name()
                    );
                }
                self.pointer_missing = true;
                // Still alive, and says so.
                self.heartbeat(false).await;
                return Exit::Degraded;
            }
            Ok(Checked::Changed(pointer, e_tag)) => (*pointer, e_tag),
            // A store that answered, with a pointer that is refused or cannot be read:
            // not an outage (no backoff), reported once, and the instance still
            // heartbeats meanwhile.
            Err(err) if !StoreError::unanswered(&err) => {
                self.failures = 0;
                self.e_tag = None;
                return self.refused(err).await;
            }
            Err(err) => return self.store_failed(&err),
        };
        self.last_refusal = None;
        self.failures = 0;
        self.pointer_missing = false;
        let url = self.store.url_of(&layout::pointer(&name));
        self.last_pointer = Some((pointer.clone(), url.clone()));
        match self.act(pointer, &url).await {
            Acted::Done(exit) => {
                self.e_tag = e_tag;
                exit
            }
            Acted::Again(exit) => exit,
        }
    }

    /// A check that found the pointer unchanged.
    async fn unchanged(&mut self, name: &str) -> Exit {
        tracing::debug!("pointer {name} unchanged");
        self.failures = 0;
        // Unchanged, but a signed pointer's expiry passes with the clock: a
        // pointer kept in place past it is a freeze, reported as one.
        if let (Some(trust), Some((pointer, url))) = (&self.trust, &self.last_pointer)
            && let Err(refused) = trust.still_valid(name, pointer)
        {
            let err = anyhow::Error::new(refused).context(format!("refused pointer {url}"));
            return self.refused(err).await;
        }
        // A timed rollout may have reached this instance, or moved its place,
        // since: act when the tag it assigns or the place changed (a new place
        // is reported at once).
        if let Some((pointer, url)) = self.last_pointer.clone()
            && pointer.rollout.is_some()
            && self
                .trust
                .as_ref()
                .is_none_or(|t| t.still_valid(name, &pointer).is_ok())
        {
            let assigned = pointer.assign(&self.identity.machine_id, crate::release::clock());
            let tag_moved = self.target.as_ref().map(|(tag, _)| tag.as_str()) != Some(assigned.tag.as_str());
            if tag_moved || self.placement != assigned.placement {
                return self.act_again(pointer, &url).await;
            }
        }
        self.heartbeat(false).await;
        Exit::Ok
    }

    /// Acts on what the unchanged pointer assigns, and makes sure an assignment that
    /// was not applied (held, a busy lock, a store that stopped answering) is read and
    /// tried again at the next check, not only when the pointer changes.
    async fn act_again(&mut self, pointer: Pointer, url: &str) -> Exit {
        match self.act(pointer, url).await {
            Acted::Done(exit) => exit,
            Acted::Again(exit) => {
                self.e_tag = None;
                exit
            }
        }
    }

    /// What the pointer names, if it is new: fetched, and switched to unless held.
    async fn act(&mut self, pointer: Pointer, url: &str) -> Acted {
        // Decided under the lock: a boot run (or `bootlace deploy`) may have changed
        // the release while we waited for it.
        let _lock = match self.state.lock(self.config.deploy.lock_timeout) {
            Ok(lock) => lock,
            Err(err) => {
                warn!("{err}; trying again at the next check");
                return Acted::Again(Exit::Failed);
            }
        };
        // Told to stop while waiting for the lock: nothing is started.
        if self.stop.requested() {
            return Acted::Again(Exit::Ok);
        }
        let current = self.state.current();
        let assigned = pointer.assign(&self.identity.machine_id, crate::release::clock());
        // A new place in a rollout is reported at once, not at the next heartbeat.
        let moved = self.placement != assigned.placement;
        self.placement.clone_from(&assigned.placement);
        let serial = pointer.applied(&assigned).serial;
        self.target = Some((assigned.tag.clone(), serial));
        if current.as_deref() == Some(assigned.tag.as_str()) {
            self.heartbeat(moved).await;
            return Acted::Done(Exit::Ok);
        }
        if let Some(failed) = self.state.failed()
            && failed.tag == assigned.tag
            && failed.serial == serial
        {
            info!(
                "{} failed at serial {} and is not tried again until the pointer changes",
                failed.tag, failed.serial
            );
            self.heartbeat(moved).await;
            // As `run` says of it: the target is not deployed, what ran stays.
            return Acted::Done(Exit::Degraded);
        }
        let target = match deploy::assigned_target(
            &self.store,
            &pointer,
            &self.identity.machine_id,
            url,
            self.trust.as_ref(),
        )
        .await
        {
            Ok(target) => target,
            Err(err) if StoreError::unanswered(&err) => {
                return Acted::Again(self.store_failed(&err));
            }
            Err(err) => return Acted::Done(self.report_unreachable_target(err).await),
        };
        if let Some(why) = &target.refused
            && current.as_deref() == Some(target.manifest.tag.as_str())
        {
            // Refused, and already on the stable tag: say so once, in the report.
            let mut run = self.new_run();
            run.checked();
            run.running(&self.state);
            run.warn(why.clone());
            return Acted::Done(self.finish(run, Ok(())).await);
        }
        let _step = LongStep::start(self.config);
        if self.config.agent.hold_file.exists() {
            return self.hold(target).await;
        }
        self.last_hold = None;
        self.update(target).await
    }

    /// Switches to `target`: secrets fetched again, then the flow's converge (fetch,
    /// switch, init, health, commit or roll back), and the report.
    async fn update(&mut self, target: Target) -> Acted {
        info!(
            "{} -> {} (serial {})",
            self.current_name(),
            target.manifest.tag,
            target.pointer.serial
        );
        let mut run = self.new_run();
        run.checked();
        // An update fetches the secrets again: a rotated value reaches init with it.
        let fetched = secrets::fetch(&self.config.secrets, &self.identity).await;
        if let Err(err) = run.provide_secrets(self.config, fetched) {
            // Not switched: what runs keeps running. Tried again after a backoff when
            // AWS did not answer; after an answer (a missing secret, access denied),
            // when the pointer changes or on SIGHUP.
            let unanswered = secrets::unanswered(&err);
            run.running(&self.state);
            let exit = self.finish(run, Err(err)).await;
            if unanswered {
                self.failures += 1;
                return Acted::Again(exit);
            }
            return Acted::Done(exit);
        }
        let result = self
            .flow()
            .converge(
                &mut run,
                Ok((&self.store, target)),
                indicatif::ProgressBar::hidden(),
            )
            .await;
        // A store that stopped answering mid-update: tried again (after a backoff); a
        // hold file made during the download: at the next check; a release that was
        // refused is not, until the pointer changes.
        let (unanswered, held) = (run.store_unanswered(), run.held());
        let exit = self.finish(run, result).await;
        if unanswered {
            self.failures += 1;
            return Acted::Again(exit);
        }
        if held {
            return Acted::Again(exit);
        }
        Acted::Done(exit)
    }

    /// While the hold file exists: the target is fetched but not switched to; the
    /// switch happens at the first check after the file is gone.
    async fn hold(&mut self, target: Target) -> Acted {
        let hold = self.config.agent.hold_file.display().to_string();
        let tag = target.manifest.tag.clone();
        let fetched = deploy::make_present(
            &self.config.deploy,
            &self.state,
            &self.store,
            &target.manifest,
            indicatif::ProgressBar::hidden(),
        )
        .await;
        let note = match &fetched {
            Ok(_) => format!("held by {hold}: {tag} is fetched and is switched to once the file is gone"),
            Err(err) => format!(
                "held by {hold}: fetching {tag} failed: {}",
                crate::error::one_line(err)
            ),
        };
        // Said once, not at every check while the hold lasts.
        if self.last_hold.as_ref() == Some(&note) {
            tracing::debug!("{note}");
            self.heartbeat(false).await;
        } else {
            info!("{note}");
            let mut run = self.new_run();
            run.checked();
            run.running(&self.state);
            match &fetched {
                Ok(_) => run.warn(note.clone()),
                // What runs keeps running: degraded, not failed.
                Err(_) => run.degrade(note.clone()),
            }
            self.finish(run, Ok(())).await;
            self.last_hold = Some(note);
        }
        match fetched {
            // Read again at the next check, to switch once the hold is gone.
            Ok(_) => Acted::Again(Exit::Ok),
            // The store did not answer: tried again after a backoff.
            Err(err) if StoreError::unanswered(&err) => {
                self.failures += 1;
                Acted::Again(Exit::Degraded)
            }
            // A corrupt or refused release is not fetched again at every check, held or
            // not: only a change of the pointer tries it again.
            Err(_) => Acted::Done(Exit::Degraded),
        }
    }
}

/// What a check did with a pointer that changed.
enum Acted {
    /// Done with (or deliberately passed over): not read again until it changes.
    Done(Exit),
    /// Not done: read and tried again at the next check.
    Again(Exit),
}
