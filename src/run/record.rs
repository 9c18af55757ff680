//! What a run has learned, step by step ([`Run`]), and the one place it becomes the
//! run's report: saved in the state dir, uploaded to the store, and mapped to an exit
//! code ([`Ran`]).

use std::time::Instant;

use tracing::{info, warn};

use crate::config::Config;
use crate::deploy::state::StateDir;
use crate::error::Exit;
use crate::identity::Identity;
use crate::report::{self, Report, RolledBackFrom, Status, Timings, Trigger};
use crate::store::{Store, StoreError, layout};
use crate::{release, secrets};

/// A finished run: its report and the exit code it maps to.
pub struct Ran {
    pub report: Report,
    pub exit: Exit,
}

/// What a run has learned so far; turned into the report in one place, [`Run::finish`].
pub struct Run {
    pub(super) started: Instant,
    pub(super) started_at: String,
    pub(super) trigger: Trigger,
    pub(super) timings: Timings,
    pub(super) machine_id: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) role: Option<String>,
    pub(super) context: Option<String>,
    pub(super) tag: Option<String>,
    /// The digest of `tag`'s release, as the state dir has it.
    pub(super) sha256: Option<String>,
    pub(super) deployed: bool,
    pub(super) arrival: Option<report::Arrival>,
    pub(super) init: Option<report::Init>,
    pub(super) health: Option<report::Health>,
    pub(super) previous_tag: Option<String>,
    /// What `previous` named before this run switched: restored by a rollback.
    pub(super) previous_link: Option<String>,
    pub(super) rolled_back_from: Option<RolledBackFrom>,
    /// A target that failed before and was not tried again.
    pub(super) kept_back_from: Option<RolledBackFrom>,
    pub(super) checked_at: Option<String>,
    /// This instance's place in the pointer's rollout, when it has one.
    pub rollout: Option<release::rollout::Placement>,
    pub(super) degraded: Option<String>,
    pub(super) warnings: Vec<String>,
    /// The store did not answer: it is not asked again for the report's upload, which
    /// would hold the run for another `store.deadline`.
    pub(super) store_unanswered: bool,
    /// bootlace was told to stop while an init script or health check ran.
    pub(super) stopped: bool,
    /// The agent's hold file stopped the switch; the target is fetched.
    pub(super) held: bool,
    /// The secrets written for init: their names go into the report, and their values
    /// are scrubbed from the output the report keeps.
    pub(super) secrets: Option<secrets::Fetched>,
    /// A drift check's finding, for the agent's repair run.
    pub drift: Option<report::Drift>,
}

impl Run {
    pub fn new(trigger: Trigger) -> Self {
        Self {
            started: Instant::now(),
            started_at: release::now(),
            trigger,
            timings: Timings::default(),
            machine_id: None,
            environment: None,
            role: None,
            context: None,
            tag: None,
            sha256: None,
            deployed: false,
            arrival: None,
            init: None,
            health: None,
            previous_tag: None,
            previous_link: None,
            rolled_back_from: None,
            kept_back_from: None,
            checked_at: None,
            rollout: None,
            degraded: None,
            warnings: Vec::new(),
            store_unanswered: false,
            stopped: false,
            held: false,
            secrets: None,
            drift: None,
        }
    }

    pub(super) async fn time<T>(
        &mut self,
        field: fn(&mut Timings) -> &mut u64,
        step: impl Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let result = step.await;
        *field(&mut self.timings) = started.elapsed().as_millis() as u64;
        result
    }

    pub fn note_identity(&mut self, identity: &Identity) {
        self.machine_id = Some(identity.machine_id.clone());
        self.environment = identity.environment.clone();
        self.role = identity.role.clone();
        self.context = identity.context.clone();
    }

    /// Whether the agent's hold file stopped the switch.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Whether a store call failed to get an answer during this run.
    pub fn store_unanswered(&self) -> bool {
        self.store_unanswered
    }

    /// Notes when the pointer was read.
    pub fn checked(&mut self) {
        self.checked_at = Some(release::now());
    }

    /// Marks the run degraded: the target is not what runs, for `why`.
    pub fn degrade(&mut self, why: String) {
        self.degraded = Some(why);
    }

    /// Adds a warning to the report.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Writes the secrets `fetched` for init (when any are configured), or fails the
    /// run before init with why, naming the secret.
    pub fn provide_secrets(
        &mut self,
        config: &Config,
        fetched: anyhow::Result<secrets::Fetched>,
    ) -> anyhow::Result<()> {
        if config.secrets.items.is_empty() {
            // None configured (any more): none left behind either. A run that uses no
            // secrets never fails for them.
            if let Err(err) = secrets::clear(&config.secrets) {
                warn!("{}", crate::error::one_line(&err));
            }
            return Ok(());
        }
        let fetched = fetched?;
        secrets::write(&config.secrets, &fetched)?;
        info!(
            "{} secrets written to {} in {} ms",
            fetched.names().len(),
            config.secrets.dir.display(),
            fetched.elapsed_ms
        );
        self.secrets = Some(fetched);
        Ok(())
    }

    /// `text` with the values of the secrets written for this run replaced by their
    /// names.
    pub fn scrub(&self, text: &str) -> String {
        match &self.secrets {
            Some(fetched) => fetched.scrub(text),
            None => text.to_owned(),
        }
    }

    /// Notes the release that runs, for a report of a step that switched nothing.
    pub fn running(&mut self, state: &StateDir) {
        self.tag = state.current();
        self.sha256 = self.tag.as_deref().and_then(|tag| state.sha256_of(tag));
        self.previous_tag = self.tag.clone();
    }

    /// Writes the report locally and to the store, and picks the exit code.
    pub async fn finish(
        mut self,
        config: &Config,
        state: &StateDir,
        identity: Option<&Identity>,
        store: Option<&Store>,
        result: anyhow::Result<()>,
    ) -> Ran {
        // A degraded run whose init then failed: the failure is the error, and why
        // the target was not deployed stays in the report too.
        if result.is_err()
            && let Some(why) = self.degraded.take()
        {
            self.warnings.push(why);
        }
        let (status, exit, error) = match (&result, &self.rolled_back_from, &self.degraded) {
            (Err(err), ..) => (Status::Failed, Exit::of(err), Some(crate::error::one_line(err))),
            (Ok(()), Some(from), _) => (Status::RolledBack, Exit::RolledBack, Some(from.reason.clone())),
            (Ok(()), None, Some(why)) => (Status::Degraded, Exit::Degraded, Some(why.clone())),
            (Ok(()), None, None) => (Status::Ok, Exit::Ok, None),
        };
        self.timings.total = self.started.elapsed().as_millis() as u64;
        let mut error = error;
        if let Some(fetched) = &self.secrets {
            // An init script may print what it was given; the report does not keep it.
            let tails = [
                self.init.as_mut().map(|i| &mut i.output_tail),
                self.health.as_mut().map(|h| &mut h.output_tail),
                self.rolled_back_from.as_mut().map(|r| &mut r.reason),
                self.kept_back_from.as_mut().map(|r| &mut r.reason),
                error.as_mut(),
            ];
            for text in tails.into_iter().flatten().chain(self.warnings.iter_mut()) {
                *text = fetched.scrub(text);
            }
        }
        let secret_names = self
            .secrets
            .as_ref()
            .map(secrets::Fetched::names)
            .unwrap_or_default();
        let report = Report {
            format_version: report::FORMAT_VERSION,
            status,
            machine_id: self.machine_id.take(),
            environment: self.environment.take(),
            role: self.role.take(),
            context: self.context.take(),
            tag: self.tag.take(),
            sha256: self.sha256.take(),
            deployed: self.deployed,
            arrival: self.arrival.take(),
            init: self.init.take(),
            trigger: self.trigger,
            previous_tag: self.previous_tag.take(),
            health: self.health.take(),
            rolled_back_from: self.rolled_back_from.take().or(self.kept_back_from.take()),
            rollout: self.rollout.take(),
            checked_at: self.checked_at.take(),
            hostname: hostname(),
            timings_ms: std::mem::take(&mut self.timings),
            started_at: self.started_at.clone(),
            finished_at: release::now(),
            bootlace_version: env!("CARGO_PKG_VERSION").to_owned(),
            error,
            exit_code: (exit == Exit::BadInput).then_some(exit as u8),
            secrets: secret_names,
            warnings: std::mem::take(&mut self.warnings),
            drift: self.drift.take(),
        };
        if let Err(err) = report.save(state.root()) {
            warn!("writing the report to {}: {err}", state.root().display());
        }
        if let (true, Some(identity), Some(store)) = (config.report.upload, identity, store) {
            upload(&report, identity, store, &config.report).await;
        }
        Ran { report, exit }
    }
}

/// This machine's host name, as the kernel has it.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Uploads the report; a failure is logged, never fatal.
async fn upload(report: &Report, identity: &Identity, store: &Store, config: &crate::report::Config) {
    if identity.environment.is_none() || identity.role.is_none() {
        warn!("not uploading the report: user-data gives no environment or role");
        return;
    }
    if let Err(err) = upload_report(report, identity, store, config).await {
        warn!("uploading the report: {err}");
    }
}

/// Writes `report` at its key, `reports/<environment>/<role>/<machine_id>.json`, tagged
/// with the machine id under `[report] instance_tag`; nothing when the identity names
/// no environment or role.
pub(crate) async fn upload_report(
    report: &Report,
    identity: &Identity,
    store: &Store,
    config: &crate::report::Config,
) -> Result<(), StoreError> {
    let (Some(environment), Some(role)) = (&identity.environment, &identity.role) else {
        return Ok(());
    };
    let key = layout::report(environment, role, &identity.machine_id);
    let tag = config
        .instance_tag
        .then_some((layout::INSTANCE_TAG, identity.machine_id.as_str()));
    store.put_tagged(&key, report.to_json().into(), tag).await
}
