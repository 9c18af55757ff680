//! Drift in the agent (DESIGN §6.10): every `agent.drift_interval` (plus jitter),
//! between pointer checks and under the state dir's lock, the current release's
//! playbook in check mode. What it finds refreshes the stored report (`drift`); with
//! `agent.drift = "apply"` drift is repaired by running the same release's init again
//! (`BOOTLACE_PHASE=drift`) and its health check, reported as a run of its own
//! (`drift.repaired`). Drift never rolls back: it is the same release.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Agent;
use super::config::DriftMode;
use crate::error::BadInput;
use crate::init::Phase;
use crate::report::{Drift, Report};
use crate::run::Flow;

impl Agent<'_> {
    /// When the next drift check is due, from now; `None` when drift is off.
    pub(super) fn next_drift(&self) -> Option<Instant> {
        let interval = self.config.agent.drift_interval?;
        let jitter = (interval / 10).min(Duration::from_secs(60));
        Some(Instant::now() + interval + jitter.mul_f64(fastrand::f64()))
    }

    /// One drift check, and a repair when asked for.
    pub(super) async fn drift(&mut self) {
        let _lock = match self.state.lock(self.config.deploy.lock_timeout) {
            Ok(lock) => lock,
            Err(err) => {
                warn!("drift check skipped: {err}");
                return;
            }
        };
        if self.stop.requested() {
            return;
        }
        let checked = match self.flow().check_drift() {
            Ok(checked) => checked,
            // Nothing to check (no playbook init, nothing current): said once.
            Err(err) if err.chain().any(|e| e.is::<BadInput>()) => {
                let why = crate::error::one_line(&err);
                if self.last_drift_refusal.as_ref() != Some(&why) {
                    warn!("drift check: {why}");
                    self.last_drift_refusal = Some(why);
                }
                return;
            }
            Err(err) => {
                let tag = self.current_name();
                let error = Some(crate::error::one_line(&err));
                warn!("drift check of {tag}: {}", error.as_deref().unwrap_or_default());
                self.amend(drift_of(tag, 0, Vec::new(), error)).await;
                return;
            }
        };
        self.last_drift_refusal = None;
        if !checked.completed() {
            let error = format!(
                "the check of {} exited with {}",
                checked.script,
                checked.exit_code.map_or("no code".into(), |c| c.to_string())
            );
            warn!("drift check of {}: {error}", checked.tag);
            self.amend(drift_of(checked.tag, 0, Vec::new(), Some(error)))
                .await;
            return;
        }
        let mut drift = drift_of(
            checked.tag.clone(),
            checked.tasks.changed,
            checked.changed_tasks.clone(),
            None,
        );
        if !checked.drifted() {
            info!("drift check of {}: none", checked.tag);
            self.amend(drift).await;
            return;
        }
        warn!(
            "drift on {}: {} task(s) would change: {}",
            checked.tag,
            checked.tasks.changed,
            checked.changed_tasks.join(", ")
        );
        if self.config.agent.drift != DriftMode::Apply {
            self.amend(drift).await;
            return;
        }
        let mut run = self.new_run();
        run.checked();
        run.running(&self.state);
        let flow = Flow {
            phase: Phase::Drift,
            ..self.flow()
        };
        let result = flow.repair(&mut run, &checked.tag).await;
        drift.repaired = Some(result.is_ok());
        run.drift = Some(drift);
        self.finish(run, result).await;
    }

    /// The stored report with `drift` set, refreshed in place and uploaded.
    async fn amend(&self, drift: Drift) {
        let mut report = match Report::load(self.state.root()) {
            Ok(Some(report)) => report,
            _ => return self.heartbeat(true).await,
        };
        report.drift = Some(drift);
        self.refresh(&report).await;
    }
}

fn drift_of(tag: String, changed: u64, tasks: Vec<String>, error: Option<String>) -> Drift {
    Drift {
        checked_at: crate::release::now(),
        tag,
        changed,
        tasks,
        repaired: None,
        error,
    }
}
