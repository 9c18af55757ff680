//! `[agent]` (DESIGN §6.2): how often the agent checks the pointer, when it reports,
//! and the hold file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::units::Invalid;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[serde(with = "crate::units::duration")]
    pub interval: Duration,
    /// Extra random delay up to this; `None`: min(interval / 10, 60 s).
    #[serde(with = "crate::units::optional_duration")]
    pub jitter: Option<Duration>,
    /// The stored report is refreshed at least this often, even when nothing changed.
    #[serde(with = "crate::units::duration")]
    pub report_interval: Duration,
    /// While it exists, a new release is fetched but not switched to.
    pub hold_file: PathBuf,
    /// How often the current release's playbook is run in check mode between pointer
    /// checks (plus jitter); off when unset (DESIGN §6.10).
    #[serde(with = "crate::units::optional_duration")]
    pub drift_interval: Option<Duration>,
    /// What drift leads to: a report, or the same release's init run again.
    pub drift: DriftMode,
}

/// `agent.drift`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// The stored report says what drifted; nothing is changed.
    #[default]
    Report,
    /// The release's init runs again (`BOOTLACE_PHASE=drift`), then its health check.
    Apply,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            jitter: None,
            report_interval: Duration::from_secs(3600),
            hold_file: PathBuf::from("/run/bootlace/hold"),
            drift_interval: None,
            drift: DriftMode::Report,
        }
    }
}

/// The shortest `agent.interval` accepted: shorter is a flood, not a check.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Config {
    /// Every check is a request to the store, from every instance at once.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.interval < MIN_INTERVAL {
            return Err(Invalid::new(
                "agent.interval",
                "at least 100ms (each check is a request to the store from every instance; minutes are usual)",
            ));
        }
        if self.drift_interval.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(Invalid::new(
                "agent.drift_interval",
                "at least 1s (each check runs the whole playbook in check mode; hours are usual)",
            ));
        }
        Ok(())
    }

    /// The most random delay added to each interval.
    pub fn jitter(&self) -> Duration {
        self.jitter
            .unwrap_or_else(|| (self.interval / 10).min(Duration::from_secs(60)))
    }
}
