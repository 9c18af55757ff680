//! Init (DESIGN §5): the candidate scripts, most specific first, and running the one
//! that exists — only that one. The script runs in the release with the identity in
//! its environment, as [`crate::process`] runs commands: its output streams through to
//! bootlace's own (and so to the journal) while the last 64 KiB are kept for the
//! report; at the timeout its whole process group is stopped.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BadInput;
use crate::identity::Identity;
use crate::process::{How, Outcome, execute};

/// `[init]`: where the init scripts are, which run, and for how long.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub root: String,
    pub candidates: Vec<String>,
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Whether a release with no init script for this instance fails the run.
    pub required: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "{release}/bootstrap".into(),
            candidates: [
                "{context}/{environment}/{machine_id}.sh",
                "{context}/{environment}/bootstrapper.sh",
                "{context}/bootstrapper.sh",
            ]
            .map(String::from)
            .to_vec(),
            timeout: Duration::from_secs(600),
            required: false,
        }
    }
}

/// One candidate script and whether it is there.
#[derive(Debug, Serialize)]
pub struct Candidate {
    /// Relative to the init root, as the template resolved.
    pub script: String,
    pub path: PathBuf,
    pub present: bool,
}

/// The candidates of `config` for `identity`, in order, under the release at `release`.
pub fn candidates(config: &Config, identity: &Identity, release: &Path) -> Result<Vec<Candidate>, BadInput> {
    let root = PathBuf::from(config.root.replace("{release}", &release.display().to_string()));
    config
        .candidates
        .iter()
        .map(|template| {
            let script = fill(template, identity)?;
            let path = root.join(&script);
            let present = std::fs::symlink_metadata(&path).is_ok();
            Ok(Candidate {
                script,
                path,
                present,
            })
        })
        .collect()
}

/// A candidate template with the identity's values filled in: a relative path.
fn fill(template: &str, identity: &Identity) -> Result<String, BadInput> {
    let text = identity.fill(template, "init candidate")?;
    if text.starts_with('/') || text.split('/').any(|c| c == "..") {
        return Err(BadInput(format!(
            "init candidate {template:?}: absolute path or `..`"
        )));
    }
    Ok(text)
}

/// Runs `candidate` (which must exist) in `release`. The script must be a regular file
/// inside the release once symlinks are resolved.
/// `quiet_stdout`: the script's stdout goes to our stderr, for `--json` runs whose
/// stdout is the report alone.
pub fn run(
    candidate: &Candidate,
    release: &Path,
    env: &BTreeMap<String, String>,
    how: &How<'_>,
) -> anyhow::Result<Outcome> {
    let script = checked_script(&candidate.path, release)?;
    let command = interpreted(&script)?;
    let mut outcome = execute(command, release, env, how)
        .map_err(|e| anyhow::anyhow!("init script {}: {e:#}", script.display()))?;
    outcome.script = candidate.script.clone();
    Ok(outcome)
}

/// How the script is started: directly when executable; otherwise by the interpreter
/// its `#!` line names (as the kernel would, with at most one argument), else `sh`.
fn interpreted(script: &Path) -> anyhow::Result<Command> {
    let executable = std::fs::metadata(script)?.permissions().mode() & 0o111 != 0;
    if executable {
        return Ok(Command::new(script));
    }
    let mut first = [0u8; 256];
    let n = std::fs::File::open(script)
        .and_then(|mut f| f.read(&mut first))
        .map_err(|e| anyhow::anyhow!("reading init script {}: {e}", script.display()))?;
    let line = first[..n].split(|&b| b == b'\n').next().unwrap_or_default();
    let mut command = match line.strip_prefix(b"#!") {
        Some(shebang) => {
            let shebang = String::from_utf8_lossy(shebang);
            let mut words = shebang.trim().splitn(2, [' ', '\t']);
            let interpreter = words
                .next()
                .filter(|w| !w.is_empty())
                .ok_or_else(|| anyhow::anyhow!("init script {}: empty #! line", script.display()))?;
            let mut command = Command::new(interpreter);
            command.args(words.next().map(str::trim).filter(|a| !a.is_empty()));
            command
        }
        None => Command::new("/bin/sh"),
    };
    command.arg(script);
    Ok(command)
}

/// The script's real path, refusing what is not a regular file inside the release.
fn checked_script(path: &Path, release: &Path) -> anyhow::Result<PathBuf> {
    let release = release.canonicalize()?;
    let real = path
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("init script {}: {e}", path.display()))?;
    if !real.starts_with(&release) {
        anyhow::bail!(
            "init script {} resolves outside the release, to {}",
            path.display(),
            real.display()
        );
    }
    if !std::fs::metadata(&real)?.is_file() {
        anyhow::bail!("init script {} is not a regular file", path.display());
    }
    Ok(real)
}

/// Why an init script runs (`BOOTLACE_PHASE`): at boot, for an update by the agent, or
/// to bring the last good release back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Boot,
    Update,
    Rollback,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Boot => "boot",
            Phase::Update => "update",
            Phase::Rollback => "rollback",
        }
    }
}

/// The environment an init script (and a health command) gets on top of bootlace's
/// own. `previous`: what was current before (`BOOTLACE_PREVIOUS_TAG`, empty if none).
pub fn environment(
    identity: &Identity,
    tag: &str,
    release: &Path,
    phase: Phase,
    previous: Option<&str>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |key: &str, value: &str| {
        env.insert(format!("BOOTLACE_{key}"), value.to_owned());
    };
    for (key, value) in [
        ("ENVIRONMENT", identity.environment.as_deref()),
        ("ROLE", identity.role.as_deref()),
        ("CONTEXT", identity.context.as_deref()),
        ("MACHINE_ID", Some(identity.machine_id.as_str())),
        ("TAG", Some(tag)),
    ] {
        if let Some(value) = value {
            set(key, value);
        }
    }
    set("RELEASE_DIR", &release.display().to_string());
    set("PHASE", phase.name());
    set("PREVIOUS_TAG", previous.unwrap_or_default());
    // Extras never shadow the variables above (an extra named `tag`, say).
    for (key, value) in &identity.extra {
        env.entry(format!("BOOTLACE_{}", key.to_ascii_uppercase()))
            .or_insert_with(|| value.clone());
    }
    env
}
