//! What the agent says and keeps up between updates: the report of each check, the
//! heartbeat that refreshes it, store outages backed off, a refused or unreachable
//! target, the status line, and what SIGHUP reloads (the identity, the secrets).

use std::time::Duration;

use tracing::{info, warn};

use super::{Agent, BACKOFF};
use crate::error::Exit;
use crate::report::Report;
use crate::run::Run;
use crate::{identity, secrets};

impl Agent<'_> {
    /// The pointer names a release that cannot be had (a missing or refused manifest):
    /// the current release keeps running, and the report says why.
    pub(super) async fn report_unreachable_target(&mut self, err: anyhow::Error) -> Exit {
        let mut run = self.new_run();
        run.checked();
        let result = self
            .flow()
            .converge(&mut run, Err(err), indicatif::ProgressBar::hidden())
            .await;
        self.finish(run, result).await
    }

    /// A pointer refused by a trust rule: what runs keeps running, and the report says
    /// why, once (later checks that find the same refusal only log it).
    pub(super) async fn refused(&mut self, err: anyhow::Error) -> Exit {
        let why = crate::error::one_line(&err);
        if self.last_refusal.as_ref() == Some(&why) {
            warn!("{why}; keeping {}", self.current_name());
            self.heartbeat(false).await;
            return Exit::Degraded;
        }
        self.last_refusal = Some(why);
        self.report_unreachable_target(err).await
    }

    /// Writes the report (locally and to the store) and logs it in one line.
    pub(super) async fn finish(&self, run: Run, result: anyhow::Result<()>) -> Exit {
        let ran = run
            .finish(
                self.config,
                &self.state,
                Some(&self.identity),
                Some(&self.store),
                result,
            )
            .await;
        self.reported.set(true);
        let line = ran.report.summary();
        match ran.exit {
            Exit::Ok => info!("{line}"),
            _ => warn!("{line}: {}", ran.report.error.as_deref().unwrap_or("")),
        }
        ran.exit
    }

    /// Refreshes the stored report when it is older than `agent.report_interval`, so
    /// that a silent instance is a dead one.
    pub(super) async fn heartbeat(&self, now: bool) {
        let path = self.state.root().join(crate::report::LAST_RUN);
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if !now && age.is_some_and(|age| age < self.config.agent.report_interval) {
            return;
        }
        let mut report = match Report::load(self.state.root()) {
            Ok(Some(report)) => report,
            // Nothing to refresh, or nothing readable: a report of what runs now is
            // written instead, so the instance does not go silent.
            Ok(None) | Err(_) => {
                let mut run = self.new_run();
                run.checked();
                run.running(&self.state);
                if let Err(err) = Report::load(self.state.root()) {
                    let why = format!(
                        "the last report could not be read ({}); written anew",
                        crate::error::one_line(&err)
                    );
                    warn!("{why}");
                    run.warn(why);
                }
                self.finish(run, Ok(())).await;
                return;
            }
        };
        report.checked_at = Some(crate::release::now());
        report.rollout.clone_from(&self.placement);
        self.refresh(&report).await;
    }

    /// Writes `report` over the last one and uploads it: a heartbeat or a drift check
    /// is not a run, and adds nothing to runs/.
    pub(super) async fn refresh(&self, report: &Report) {
        if let Err(err) = report.refresh(self.state.root()) {
            warn!("refreshing the report: {err}");
        }
        if self.config.report.upload
            && let Err(err) =
                crate::run::upload_report(report, &self.identity, &self.store, &self.config.report).await
        {
            warn!("uploading the report: {err}");
        }
    }

    pub(super) fn store_failed(&mut self, err: &anyhow::Error) -> Exit {
        self.failures += 1;
        warn!(
            "{}; keeping {} and trying again in {}",
            crate::error::one_line(err),
            self.current_name(),
            humantime::format_duration(self.backoff())
        );
        Exit::Degraded
    }

    /// min(interval, 15 s × 2^n) after n + 1 store errors in a row.
    pub(super) fn backoff(&self) -> Duration {
        let doubled = BACKOFF.saturating_mul(1 << self.failures.saturating_sub(1).min(16));
        doubled.min(self.config.agent.interval)
    }

    pub(super) fn next_wait(&self) -> Duration {
        if self.failures > 0 {
            return self.backoff();
        }
        let jitter = self.config.agent.jitter();
        self.config.agent.interval + jitter.mul_f64(fastrand::f64())
    }

    pub(super) fn current_name(&self) -> String {
        self.state.current().unwrap_or_else(|| "no release".into())
    }

    /// `prod → v43 (serial 9), next check in 4m 51s`.
    pub(super) fn status_line(&self, wait: Duration) -> String {
        let name = self.identity.environment.as_deref().unwrap_or("-");
        let target = match &self.target {
            Some((tag, serial)) => format!("{tag} (serial {serial})"),
            None => "?".into(),
        };
        let wait = humantime::format_duration(Duration::from_secs(wait.as_secs()));
        format!(
            "{name} → {target}, running {}, next check in {wait}",
            self.current_name()
        )
    }

    /// SIGHUP: the identity is resolved again (user-data may have changed), and the
    /// pointer is checked at once.
    pub(super) async fn reload(&mut self) {
        match identity::resolve(&self.config.identity, &self.config.identity.source).await {
            Ok(identity) => {
                self.identity = identity;
                self.e_tag = None;
                info!("SIGHUP: identity resolved again; checking now");
                self.refresh_secrets().await;
            }
            Err(err) => warn!(
                "SIGHUP: {}; keeping the identity resolved before",
                crate::error::one_line(&err)
            ),
        }
    }

    /// SIGHUP with secrets configured: they are fetched and written again, so that a
    /// rotated value reaches the instance without a release. A failure keeps the files
    /// written before.
    pub(super) async fn refresh_secrets(&self) {
        let config = &self.config.secrets;
        if config.items.is_empty() {
            return;
        }
        // Not while a run or an update writes them too.
        let _lock = match self.state.lock(self.config.deploy.lock_timeout) {
            Ok(lock) => lock,
            Err(err) => {
                warn!("SIGHUP: secrets not fetched again: {err}");
                return;
            }
        };
        let refreshed = match secrets::fetch(config, &self.identity).await {
            Ok(fetched) => secrets::write(config, &fetched).map(|()| fetched.names().len()),
            Err(err) => Err(err),
        };
        match refreshed {
            Ok(count) => info!(
                "SIGHUP: {count} secrets fetched again into {}",
                config.dir.display()
            ),
            Err(err) => warn!(
                "SIGHUP: {}; the secrets written before stay",
                crate::error::one_line(&err)
            ),
        }
    }
}
