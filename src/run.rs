//! The boot run (DESIGN §1): lock → identity → deploy → init → report. Every run ends
//! with a report, whatever failed; a target that cannot be deployed, for any reason,
//! while a verified release is current degrades the run instead of failing the boot.

use std::time::Instant;

use tracing::{info, warn};

use crate::config::Config;
use crate::deploy::{self, state::StateDir};
use crate::exit::{self, Exit};
use crate::identity::{self, Identity};
use crate::init;
use crate::report::{self, Report, Status, Timings};
use crate::store::{self, Store, StoreError, layout};

/// A finished run: its report and the exit code it maps to.
pub struct Ran {
    pub report: Report,
    pub exit: Exit,
}

/// Runs the boot flow. Only a state dir that cannot be opened or locked is an `Err`;
/// everything after that ends in a report.
/// `json`: stdout carries only the report, so the init script's stdout goes to stderr.
pub async fn boot(config: &Config, progress: deploy::fetch::Progress, json: bool) -> anyhow::Result<Ran> {
    let state = StateDir::open(&config.deploy.state_dir)
        .map_err(|e| anyhow::anyhow!("opening state dir {}: {e}", config.deploy.state_dir.display()))?;
    let _lock = state.lock(config.deploy.lock_timeout)?;
    let mut run = Run::new();
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
    let (store, deployed) =
        match store::open(&config.store, identity.credentials.as_ref(), store::Access::Read) {
            Ok(store) => {
                let deployed = run
                    .time(
                        |t| &mut t.deploy,
                        deploy_step(config, &state, &store, &identity, progress),
                    )
                    .await;
                (Some(store), deployed)
            }
            Err(err) => (None, Err(err)),
        };
    let tag = match deployed {
        Ok(deployed) => {
            run.tag = Some(deployed.tag.clone());
            run.sha256 = Some(deployed.sha256);
            run.deployed = deployed.deployed;
            deployed.tag
        }
        // Whatever kept the target from being deployed, a verified current release
        // still boots: its init runs and the run ends degraded, saying why.
        Err(err) => {
            // A store that did not answer is not asked again for the report's upload:
            // that would hold the boot for another store.deadline.
            let unreachable = is_store_failure(&err);
            let store = store.filter(|_| !unreachable);
            let Some(current) = state.current() else {
                return Ok(run
                    .finish(config, &state, Some(&identity), store.as_ref(), Err(err))
                    .await);
            };
            let why = exit::one_line(&err);
            warn!("{why}; running the current release {current} (degraded)");
            run.degraded = Some(match unreachable {
                true => format!("store unreachable: {why}"),
                false => format!("target not deployed: {why}"),
            });
            run.tag = Some(current.clone());
            let result = run_init(config, &state, &identity, &current, json, &mut run);
            return Ok(run
                .finish(config, &state, Some(&identity), store.as_ref(), result)
                .await);
        }
    };
    let result = run_init(config, &state, &identity, &tag, json, &mut run);
    Ok(run
        .finish(config, &state, Some(&identity), store.as_ref(), result)
        .await)
}

/// Deploys what the pointer names.
async fn deploy_step(
    config: &Config,
    state: &StateDir,
    store: &Store,
    identity: &Identity,
    progress: deploy::fetch::Progress,
) -> anyhow::Result<deploy::Deployed> {
    // Small reads have no whole-request timeout of their own (only idle and retry
    // bounds): a server trickling a pointer is stopped here.
    let manifest = tokio::time::timeout(config.deploy.timeout, deploy::target(config, identity, store))
        .await
        .unwrap_or_else(|_| {
            anyhow::bail!(
                "reading the pointer and manifest: not finished after {} (deploy.timeout)",
                humantime::format_duration(config.deploy.timeout)
            )
        })?;
    deploy::deploy(config, state, store, &manifest, progress).await
}

/// Whether a store call failed on the way (rather than the store answering with
/// something bootlace refuses).
fn is_store_failure(err: &anyhow::Error) -> bool {
    StoreError::unanswered(err)
}

/// The init step, timed.
fn run_init(
    config: &Config,
    state: &StateDir,
    identity: &Identity,
    tag: &str,
    json: bool,
    run: &mut Run,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let result = choose_and_run(config, state, identity, tag, json, run);
    run.timings.init = started.elapsed().as_millis() as u64;
    result
}

/// Runs the first present candidate; what it did goes into the run's record. No
/// candidate present is a loud warning, or a failure with `init.required`.
fn choose_and_run(
    config: &Config,
    state: &StateDir,
    identity: &Identity,
    tag: &str,
    json: bool,
    run: &mut Run,
) -> anyhow::Result<()> {
    let release = state.release(tag);
    let candidates = init::candidates(&config.init, identity, &release)?;
    let Some(chosen) = candidates.iter().find(|c| c.present) else {
        let tried: Vec<&str> = candidates.iter().map(|c| c.script.as_str()).collect();
        let why = format!(
            "no init script in release {tag}: none of {} exists under {}",
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
    info!("running init script {}", chosen.script);
    let env = init::environment(identity, tag, &release);
    let outcome = init::run(chosen, &release, &env, config.init.timeout, json)?;
    let succeeded = outcome.succeeded();
    let (timed_out, code, stopped_by) = (outcome.timed_out, outcome.exit_code, outcome.stopped_by);
    run.init = Some(report::Init {
        script: outcome.script,
        exit_code: outcome.exit_code,
        duration_ms: outcome.duration_ms,
        output_tail: outcome.output_tail,
    });
    if let Some(signal) = stopped_by {
        anyhow::bail!(
            "stopped: bootlace got {signal} while init script {} ran, and passed it on",
            chosen.script
        );
    }
    match (succeeded, timed_out) {
        (true, _) => Ok(()),
        (false, true) => anyhow::bail!(
            "init script {} timed out after {}",
            chosen.script,
            humantime::format_duration(config.init.timeout)
        ),
        (false, false) => anyhow::bail!("init script {} exited with {}", chosen.script, code.unwrap_or(-1)),
    }
}

/// What a run has learned so far.
struct Run {
    started: Instant,
    started_at: String,
    timings: Timings,
    machine_id: Option<String>,
    environment: Option<String>,
    role: Option<String>,
    context: Option<String>,
    tag: Option<String>,
    sha256: Option<String>,
    deployed: bool,
    init: Option<report::Init>,
    degraded: Option<String>,
    warnings: Vec<String>,
}

impl Run {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            started_at: crate::release::now(),
            timings: Timings::default(),
            machine_id: None,
            environment: None,
            role: None,
            context: None,
            tag: None,
            sha256: None,
            deployed: false,
            init: None,
            degraded: None,
            warnings: Vec::new(),
        }
    }

    async fn time<T>(&mut self, field: fn(&mut Timings) -> &mut u64, step: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = step.await;
        *field(&mut self.timings) = started.elapsed().as_millis() as u64;
        result
    }

    fn note_identity(&mut self, identity: &Identity) {
        self.machine_id = Some(identity.machine_id.clone());
        self.environment = identity.environment.clone();
        self.role = identity.role.clone();
        self.context = identity.context.clone();
    }

    /// Writes the report locally and to the store, and picks the exit code.
    async fn finish(
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
        let (status, exit, error) = match (&result, &self.degraded) {
            (Err(err), _) => (Status::Failed, exit::classify(err), Some(exit::one_line(err))),
            (Ok(()), Some(why)) => (Status::Degraded, Exit::Degraded, Some(why.clone())),
            (Ok(()), None) => (Status::Ok, Exit::Ok, None),
        };
        self.timings.total = self.started.elapsed().as_millis() as u64;
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
            init: self.init.take(),
            timings_ms: std::mem::take(&mut self.timings),
            started_at: self.started_at.clone(),
            finished_at: crate::release::now(),
            bootlace_version: env!("CARGO_PKG_VERSION").to_owned(),
            error,
            exit_code: (exit == Exit::BadInput).then_some(exit as u8),
            warnings: std::mem::take(&mut self.warnings),
        };
        if let Err(err) = report.save(state.root()) {
            warn!("writing the report to {}: {err}", state.root().display());
        }
        if let (true, Some(identity), Some(store)) = (config.report.upload, identity, store) {
            upload(&report, identity, store).await;
        }
        Ran { report, exit }
    }
}

/// Uploads the report; a failure is logged, never fatal.
async fn upload(report: &Report, identity: &Identity, store: &Store) {
    let (Some(environment), Some(role)) = (&identity.environment, &identity.role) else {
        warn!("not uploading the report: user-data gives no environment or role");
        return;
    };
    let key = layout::report(environment, role, &identity.machine_id);
    if let Err(err) = store.put(&key, report.to_json().into()).await {
        warn!("uploading the report: {err}");
    }
}
