//! The run report (DESIGN §5, version 2 of §6.1): what a boot run or an agent update
//! did, written atomically to `<state_dir>/last-run.json`, kept in `<state_dir>/runs/`
//! (the last 20), and uploaded to `reports/<environment>/<role>/<machine_id>.json`.
//! Version 1 reports (older bootlace) still read: the fields version 2 added take
//! their empty values.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::write_atomic;

/// `[report]`: whether and how reports are uploaded.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub upload: bool,
    /// Uploads carry the S3 object tag `bootlace-instance=<machine_id>`, which the IAM
    /// policy of docs/fleet.md ties to the writer, so that an instance can write only
    /// its own report. S3 stores only.
    pub instance_tag: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            upload: true,
            instance_tag: false,
        }
    }
}

pub const FORMAT_VERSION: u32 = 2;
pub const LAST_RUN: &str = "last-run.json";
/// The most bytes of a report read, locally or from the store (DESIGN §6.5's caps).
pub const MAX_BYTES: u64 = 1 << 20;
const RUNS: &str = "runs";
const KEEP_RUNS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Degraded,
    /// The target failed its init or health check; the last good release runs again.
    #[serde(rename = "rolled_back")]
    RolledBack,
}

/// What started a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    #[default]
    Boot,
    Agent,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub format_version: u32,
    pub status: Status,
    pub machine_id: Option<String>,
    pub environment: Option<String>,
    pub role: Option<String>,
    pub context: Option<String>,
    pub tag: Option<String>,
    pub sha256: Option<String>,
    pub deployed: bool,
    /// How the release deployed in this run arrived (DESIGN §6.9): `via`,
    /// `bytes_downloaded`, `files_reused`, `fallback`; absent when nothing was deployed.
    #[serde(flatten)]
    pub arrival: Option<Arrival>,
    pub init: Option<Init>,
    #[serde(default)]
    pub trigger: Trigger,
    /// What was current before this run, if anything.
    #[serde(default)]
    pub previous_tag: Option<String>,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub rolled_back_from: Option<RolledBackFrom>,
    /// The staged rollout this instance is part of (DESIGN §6.3); null without one.
    #[serde(default)]
    pub rollout: Option<crate::release::rollout::Placement>,
    /// When the pointer was last read.
    #[serde(default)]
    pub checked_at: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    pub timings_ms: Timings,
    pub started_at: String,
    pub finished_at: String,
    pub bootlace_version: String,
    pub error: Option<String>,
    /// The exit code the run ended with, when its status does not already say it
    /// (2: bad config or input), so that `status` ends the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    /// The names of the secrets fetched for init (DESIGN §6.6), never their values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// What went wrong without failing the run (no init script matched, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the agent's last drift check found (DESIGN §6.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// A drift check of the current release's playbook, and its repair with `agent.drift =
/// "apply"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub checked_at: String,
    pub tag: String,
    /// Tasks that would have changed something.
    pub changed: u64,
    /// Their names (capped).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Whether the repair (the init again, then the health check) succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<bool>,
    /// Why the check could not tell (it failed, or timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a release arrived: a delta pack or the full archive, what was downloaded, and
/// why the full path was taken when a delta could have served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    pub via: Via,
    /// Bytes downloaded for the release (the pack, or the archive and its index).
    pub bytes_downloaded: u64,
    /// Files copied from a release held here.
    pub files_reused: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Delta,
    Full,
}

impl Arrival {
    pub fn delta(bytes_downloaded: u64, files_reused: u64) -> Self {
        Self {
            via: Via::Delta,
            bytes_downloaded,
            files_reused,
            fallback: None,
        }
    }

    /// One line for people: `arrived as a delta pack of 491 bytes, 12 files reused`.
    pub fn describe(&self) -> String {
        match (self.via, &self.fallback) {
            (Via::Delta, _) => format!(
                "arrived as a delta pack of {} bytes, {} files reused",
                self.bytes_downloaded, self.files_reused
            ),
            (Via::Full, None) => format!("arrived in full: {} bytes downloaded", self.bytes_downloaded),
            (Via::Full, Some(why)) => format!(
                "arrived in full: {} bytes downloaded ({why})",
                self.bytes_downloaded
            ),
        }
    }

    pub fn full(bytes_downloaded: u64, fallback: Option<String>) -> Self {
        Self {
            via: Via::Full,
            bytes_downloaded,
            files_reused: 0,
            fallback: fallback.map(|why| crate::text::printable(&why, 512)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Init {
    pub script: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub output_tail: String,
    /// The runner, when not a script's (`ansible`, or one the config adds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// A playbook's totals (DESIGN §6.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<crate::init::ansible::Tasks>,
    /// The names of the tasks that changed something, and of those that failed
    /// (capped); never a diff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_tasks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<String>,
}

/// The health check of the release that runs now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub tries: u32,
    pub duration_ms: u64,
    pub output_tail: String,
    /// The signal (SIGTERM, SIGINT) that ended the checks before they could decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
}

/// The release that was rolled back, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolledBackFrom {
    pub tag: String,
    pub sha256: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    pub identity: u64,
    pub deploy: u64,
    pub init: u64,
    pub total: u64,
}

impl Report {
    /// One line: what the run did.
    pub fn summary(&self) -> String {
        let report = self;
        let status = match report.status {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Degraded => "degraded",
            Status::RolledBack => "rolled back",
        };
        let release = match (&report.tag, report.deployed, report.status) {
            (None, ..) => "no release".to_owned(),
            (Some(tag), true, _) => format!("{tag} (deployed)"),
            (Some(tag), false, Status::Degraded) => format!("{tag} (current; the target was not deployed)"),
            (Some(tag), _, Status::RolledBack) => match &report.rolled_back_from {
                Some(from) => format!("{tag} again (from {})", from.tag),
                None => format!("{tag} again"),
            },
            (Some(tag), false, _) => format!("{tag} (already present)"),
        };
        let init = match (&report.init, report.status) {
            (Some(init), _) => format!(
                "init {} exited {} in {} ms",
                init.script,
                init.exit_code.map_or("-".into(), |c| c.to_string()),
                init.duration_ms
            ),
            // "Matched" only when candidates were looked for and none was there; an
            // update kept back, a hold, a refusal run no init at all.
            (None, _) if report.warnings.iter().any(|w| w.starts_with(NO_INIT_SCRIPT)) => {
                "no init script matched".into()
            }
            (None, _) => "no init script ran".into(),
        };
        let what = match report.trigger {
            Trigger::Boot => "run",
            Trigger::Agent => "update",
        };
        format!(
            "{what} {status}: {release}, {init}; {} ms in all",
            report.timings_ms.total
        )
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a report always serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Writes the report as `last-run.json` (temp file, fsync, rename, fsync the dir)
    /// and into `runs/`, keeping the last 20 there.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let bytes = self.to_json();
        let runs = state_dir.join(RUNS);
        fs::create_dir_all(&runs)?;
        let name = format!(
            "{}-{:08x}.json",
            self.started_at.replace(':', ""),
            fastrand::u32(..)
        );
        write_atomic(&runs.join(name), &bytes, 0o600)?;
        write_atomic(&state_dir.join(LAST_RUN), &bytes, 0o600)?;
        prune_runs(&runs)
    }

    /// Rewrites `last-run.json` alone (a heartbeat): `runs/` keeps real runs only.
    pub fn refresh(&self, state_dir: &Path) -> std::io::Result<()> {
        write_atomic(&state_dir.join(LAST_RUN), &self.to_json(), 0o600)
    }

    /// The last report in `state_dir`, if any.
    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Report>> {
        use std::io::Read;
        let path = state_dir.join(LAST_RUN);
        let mut bytes = Vec::new();
        match fs::File::open(&path).and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes)) {
            Ok(_) if bytes.len() as u64 > MAX_BYTES => {
                anyhow::bail!("reading {}: larger than {MAX_BYTES} bytes", path.display())
            }
            Ok(_) => {
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("reading {}: {e}", path.display())
                })?))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(anyhow::anyhow!("reading {}: {err}", path.display())),
        }
    }
}

/// How the warning of a release with no init script for this instance begins.
pub const NO_INIT_SCRIPT: &str = "no init script in release";

fn prune_runs(runs: &Path) -> std::io::Result<()> {
    let mut names: Vec<PathBuf> = fs::read_dir(runs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP_RUNS);
    for old in &names[..excess] {
        fs::remove_file(old)?;
    }
    Ok(())
}
