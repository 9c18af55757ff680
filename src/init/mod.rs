//! Init (DESIGN §5, §6.10): the candidates, most specific first, and running the one
//! that exists — only that one — with the runner its suffix picks ([`runner`]): a
//! script as an executable, a playbook with `ansible-playbook` ([`ansible`]), or a
//! command the config adds. It runs in the release with the identity in its
//! environment, as [`crate::process`] runs commands: its output streams through to
//! bootlace's own (and so to the journal) while the last 64 KiB are kept for the
//! report; at the timeout its whole process group is stopped.

pub mod ansible;
pub mod lint;
pub mod runner;
pub mod vendor;

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
use crate::units::Invalid;
pub use runner::{Kind, Runner};

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
    /// The runners a candidate without a suffix is tried with, in order, and those
    /// the config adds (DESIGN §6.10).
    pub runners: runner::RunnersConfig,
}

impl Config {
    /// The runners, checked (at load, so a bad table is named with its line).
    pub fn check(&self) -> Result<(), Invalid> {
        self.runners.resolve().map(drop)
    }

    /// The runners in order, a bad table as bad input (exit 2).
    pub fn runners(&self) -> Result<Vec<Runner>, BadInput> {
        self.runners
            .resolve()
            .map_err(|e| BadInput(format!("{}: {}", e.key, e.message)))
    }

    /// The directory the candidates are relative to, for the release at `release`.
    pub fn root(&self, release: &Path) -> PathBuf {
        PathBuf::from(self.root.replace("{release}", &release.display().to_string()))
    }
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
            runners: runner::RunnersConfig::default(),
        }
    }
}

/// One candidate, whether it is there, and what would run it.
#[derive(Debug, Serialize)]
pub struct Candidate {
    /// Relative to the init root: the file found, or the template as filled.
    pub script: String,
    pub path: PathBuf,
    pub present: bool,
    #[serde(skip)]
    pub runner: Runner,
}

/// The candidates of `config` for `identity`, in order, under the release at `release`.
/// A template without a suffix is looked for as written and then with each runner's
/// suffixes; two files found for one template are an error (exit 2): which one runs
/// would otherwise depend on the runners' order.
pub fn candidates(config: &Config, identity: &Identity, release: &Path) -> Result<Vec<Candidate>, BadInput> {
    let root = config.root(release);
    let runners = config.runners()?;
    let script_runner = || {
        runners
            .iter()
            .find(|r| r.kind == Kind::Script)
            .cloned()
            .unwrap_or_else(runner::Runner::script)
    };
    let mut candidates = Vec::new();
    for template in &config.candidates {
        let script = fill(template, identity)?;
        let options: Vec<(String, Runner)> = match runner::suffix_of(template) {
            Some(suffix) => {
                let by_suffix = runners.iter().find(|r| r.suffixes.iter().any(|s| s == suffix));
                vec![(script.clone(), by_suffix.cloned().unwrap_or_else(script_runner))]
            }
            None => std::iter::once((script.clone(), script_runner()))
                .chain(runners.iter().flat_map(|r| {
                    r.suffixes
                        .iter()
                        .map(|suffix| (format!("{script}.{suffix}"), r.clone()))
                }))
                .collect(),
        };
        let mut found = options
            .iter()
            .filter(|(name, _)| std::fs::symlink_metadata(root.join(name)).is_ok());
        let candidate = match (found.next(), found.next()) {
            (Some((a, _)), Some((b, _))) => {
                return Err(BadInput(format!(
                    "init candidate {template:?}: both {a} and {b} exist under {}; keep one, or \
                     name the file with its suffix in [init] candidates",
                    config.root
                )));
            }
            (Some((name, runner)), None) => Candidate {
                script: name.clone(),
                path: root.join(name),
                present: true,
                runner: runner.clone(),
            },
            (None, _) => Candidate {
                path: root.join(&script),
                present: false,
                runner: options[0].1.clone(),
                script,
            },
        };
        candidates.push(candidate);
    }
    Ok(candidates)
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

/// What running a candidate did: the command's outcome, the runner, whether that
/// counts as success (the runner's ok codes, no timeout, no signal), and for a
/// playbook, its task results.
pub struct Ran {
    pub outcome: Outcome,
    pub runner: String,
    pub succeeded: bool,
    pub results: Option<ansible::Results>,
}

/// Where a playbook keeps its files (`<state>/ansible`), and how it runs.
pub struct Options<'a> {
    pub work: &'a Path,
    pub mode: ansible::Mode,
}

/// Runs `candidate` (which must exist) in `release`. The file must be a regular file
/// inside the release once symlinks are resolved.
pub fn run(
    config: &Config,
    candidate: &Candidate,
    release: &Path,
    env: &BTreeMap<String, String>,
    how: &How<'_>,
    options: &Options<'_>,
) -> anyhow::Result<Ran> {
    let script = checked_script(&candidate.path, release)?;
    let runner = &candidate.runner;
    let named = |e: anyhow::Error| anyhow::anyhow!("init {} {}: {e:#}", what(runner), script.display());
    let mut results = None;
    let mut outcome = match &runner.kind {
        Kind::Script => execute(interpreted(&script)?, release, env, how).map_err(named)?,
        Kind::Command { command, .. } => {
            let program = ansible::find_program(&command[0]).ok_or_else(|| {
                anyhow::anyhow!(
                    "init {} needs {}, which is not installed (init.runners.{}.command)",
                    candidate.script,
                    command[0],
                    runner.name
                )
            })?;
            let mut run = Command::new(program);
            run.args(&command[1..]).arg(&script);
            execute(run, release, env, how).map_err(named)?
        }
        Kind::Ansible { command } => {
            let program = ansible::find_program(&command[0]).ok_or_else(|| {
                anyhow::anyhow!("init {}: {}", candidate.script, ansible::missing(&command[0]))
            })?;
            let setting = ansible::Setting {
                release,
                root: &config.root(release),
                work: options.work,
                mode: options.mode,
            };
            let mut prepared = ansible::command(&program, &command[1..], &script, &setting, env)?;
            let outcome = execute(prepared.take_command(), release, &prepared.env, how).map_err(named)?;
            results = Some(ansible::results(prepared.events()));
            outcome
        }
    };
    outcome.script = candidate.script.clone();
    let succeeded = outcome.exit_code.is_some_and(|code| runner.ok(code))
        && !outcome.timed_out
        && outcome.stopped_by.is_none();
    Ok(Ran {
        outcome,
        runner: runner.name.clone(),
        succeeded,
        results,
    })
}

/// What `plan` says of the runner that would run: the program it starts, found or
/// not, and (for `ansible-playbook`) its version. `None` for scripts.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub name: String,
    pub program: Option<PathBuf>,
    pub version: Option<String>,
    /// Why it cannot run: the program is not installed.
    pub missing: Option<String>,
}

pub fn readiness(runner: &Runner) -> Option<Readiness> {
    let (command, ansible) = match &runner.kind {
        Kind::Script => return None,
        Kind::Ansible { command } => (command, true),
        Kind::Command { command, .. } => (command, false),
    };
    let program = ansible::find_program(&command[0]);
    let missing = match (&program, ansible) {
        (Some(_), _) => None,
        (None, true) => Some(ansible::missing(&command[0])),
        (None, false) => Some(format!(
            "{} is not installed (init.runners.{}.command)",
            command[0], runner.name
        )),
    };
    Some(Readiness {
        name: runner.name.clone(),
        version: program.as_deref().filter(|_| ansible).and_then(ansible::version),
        program,
        missing,
    })
}

/// What a runner's file is called in messages.
pub fn what(runner: &Runner) -> &'static str {
    match runner.kind {
        Kind::Script => "script",
        Kind::Ansible { .. } => "playbook",
        Kind::Command { .. } => "file",
    }
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
    /// `plan --check` or the agent's drift check: a playbook in check mode.
    Check,
    /// The agent repairing drift: the same release's init again.
    Drift,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Boot => "boot",
            Phase::Update => "update",
            Phase::Rollback => "rollback",
            Phase::Check => "check",
            Phase::Drift => "drift",
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
