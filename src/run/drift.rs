//! Drift (DESIGN §6.10): the current release's playbook run with `--check --diff`,
//! which changes nothing and lists the tasks that would change something. `plan
//! --check` runs it once; the agent runs it between pointer checks.

use serde::Serialize;

use crate::error::BadInput;
use crate::init::{self, Kind, Phase, ansible};

use super::{Flow, Run};

/// What a check found.
#[derive(Debug, Serialize)]
pub struct Checked {
    pub tag: String,
    pub script: String,
    pub runner: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub tasks: ansible::Tasks,
    /// The tasks that would change something, and the paths they name.
    pub changed_tasks: Vec<String>,
    pub paths: Vec<String>,
    pub failed_tasks: Vec<String>,
    #[serde(skip)]
    pub output_tail: String,
}

impl Checked {
    /// Whether the host is not as the playbook leaves it.
    pub fn drifted(&self) -> bool {
        self.tasks.changed > 0
    }

    /// Whether the check itself ran to its end (a failing task, an unparsable playbook,
    /// a timeout: it did not, and says nothing of drift).
    pub fn completed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

impl Flow<'_> {
    /// Runs the current release's playbook in check mode. The caller holds the state
    /// dir's lock. A current release whose init is not a playbook, or no current
    /// release, is bad input: there is nothing to check.
    pub fn check_drift(&self) -> anyhow::Result<Checked> {
        let tag = self
            .state
            .current()
            .ok_or_else(|| BadInput("no current release to check: deploy one first".into()))?;
        let release = self.state.release(&tag);
        let candidates = init::candidates(&self.config.init, self.identity, &release)?;
        let chosen = candidates
            .iter()
            .find(|c| c.present)
            .ok_or_else(|| BadInput(format!("{tag} has no init for this instance: nothing to check")))?;
        if !matches!(chosen.runner.kind, Kind::Ansible { .. }) {
            return Err(BadInput(format!(
                "{tag}'s init {} is not a playbook: only playbooks have a check mode",
                chosen.script
            ))
            .into());
        }
        let previous = None;
        let env = self.environment(&tag, &release, Phase::Check, previous);
        let how = crate::process::How {
            timeout: self.config.init.timeout,
            quiet_stdout: self.json,
            // Ansible prints its diffs there, and they may hold secrets.
            discard_stdout: true,
            forward_signals: self.forward_signals(),
            what: "init playbook check",
            started: None,
        };
        let options = init::Options {
            work: &self.state.root().join("ansible"),
            mode: ansible::Mode::Check,
        };
        let ran = init::run(&self.config.init, chosen, &release, &env, &how, &options)?;
        if let Some(signal) = ran.outcome.stopped_by {
            anyhow::bail!("stopped: bootlace got {signal} while checking {}", chosen.script);
        }
        let results = ran.results.unwrap_or_default();
        Ok(Checked {
            tag,
            script: chosen.script.clone(),
            runner: ran.runner,
            exit_code: ran.outcome.exit_code,
            duration_ms: ran.outcome.duration_ms,
            tasks: results.tasks,
            changed_tasks: results.changed,
            paths: results.paths,
            failed_tasks: results.failed,
            output_tail: ran.outcome.output_tail,
        })
    }
}

impl Flow<'_> {
    /// Runs the current release `tag`'s init again, then its health check: the repair
    /// of drift (`BOOTLACE_PHASE=drift` when the flow's phase is `Drift`). Never a
    /// rollback: it is the same release, and a failure is reported as one.
    pub async fn repair(&self, run: &mut Run, tag: &str) -> anyhow::Result<()> {
        run.previous_tag = Some(tag.to_owned());
        self.init_and_health(run, tag, self.phase).await
    }
}
