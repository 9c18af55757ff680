//! Init (DESIGN §5): the candidate scripts, most specific first, and running the one
//! that exists — only that one. The script runs in the release with the identity in
//! its environment; its output streams through to bootlace's own (and so to the
//! journal) while the last 64 KiB are kept for the report; at the timeout its whole
//! process group is stopped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::InitConfig;
use crate::exit::BadInput;
use crate::identity::Identity;

/// Output kept for the report.
pub const TAIL_BYTES: usize = 64 << 10;
/// Between SIGTERM and SIGKILL at the timeout.
const GRACE: Duration = Duration::from_secs(3);
/// How long output is still read after the script exits: a daemon it started may hold
/// the pipes open for good.
const DRAIN: Duration = Duration::from_millis(200);

/// One candidate script and whether it is there.
#[derive(Debug, Serialize)]
pub struct Candidate {
    /// Relative to the init root, as the template resolved.
    pub script: String,
    pub path: PathBuf,
    pub present: bool,
}

/// The candidates of `config` for `identity`, in order, under the release at `release`.
pub fn candidates(
    config: &InitConfig,
    identity: &Identity,
    release: &Path,
) -> Result<Vec<Candidate>, BadInput> {
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

/// What the script did, as the report records it.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub script: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub output_tail: String,
    #[serde(skip)]
    pub timed_out: bool,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }
}

/// Runs `candidate` (which must exist) in `release`. The script must be a regular file
/// inside the release once symlinks are resolved.
/// `quiet_stdout`: the script's stdout goes to our stderr, for `--json` runs whose
/// stdout is the report alone.
pub fn run(
    candidate: &Candidate,
    release: &Path,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    quiet_stdout: bool,
) -> anyhow::Result<Outcome> {
    let script = checked_script(&candidate.path, release)?;
    let executable = std::fs::metadata(&script)?.permissions().mode() & 0o111 != 0;
    // A script without an execute bit (packaged from a zip, say) runs under sh.
    let mut command = if executable {
        Command::new(&script)
    } else {
        Command::new("/bin/sh")
    };
    if !executable {
        command.arg(&script);
    }
    command
        .current_dir(release)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting init script {}: {e}", script.display()))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
    let out_done = relay(child.stdout.take(), quiet_stdout, &tail);
    let err_done = relay(child.stderr.take(), true, &tail);
    let (status, timed_out) = wait(&mut child, timeout)?;
    for done in [out_done, err_done] {
        let _ = done.recv_timeout(DRAIN);
    }
    let tail = tail.lock().expect("tail").iter().copied().collect::<Vec<u8>>();
    Ok(Outcome {
        script: candidate.script.clone(),
        exit_code: status.code().or_else(|| status.signal().map(|s| 128 + s)),
        duration_ms: started.elapsed().as_millis() as u64,
        output_tail: String::from_utf8_lossy(&tail).into_owned(),
        timed_out,
    })
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

/// Waits for the script, stopping its process group at the timeout: SIGTERM, then
/// SIGKILL after a grace period.
fn wait(child: &mut Child, timeout: Duration) -> io::Result<(std::process::ExitStatus, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10).min(deadline - Instant::now()));
    }
    let group = child.id() as i32;
    tracing::warn!(
        "init script timed out after {}; stopping it",
        humantime::format_duration(timeout)
    );
    signal_group(group, libc::SIGTERM);
    let grace = Instant::now() + GRACE;
    while Instant::now() < grace {
        if let Some(status) = child.try_wait()? {
            // The script is gone; its children may not be.
            signal_group(group, libc::SIGKILL);
            return Ok((status, true));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_group(group, libc::SIGKILL);
    Ok((child.wait()?, true))
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Copies a pipe to our stdout (or stderr) and into the shared tail; the receiver
/// hears when the pipe closes.
fn relay(
    pipe: Option<impl Read + Send + 'static>,
    to_stderr: bool,
    tail: &Arc<Mutex<VecDeque<u8>>>,
) -> std::sync::mpsc::Receiver<()> {
    let (done, finished) = std::sync::mpsc::channel();
    let tail = tail.clone();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let _ = if to_stderr {
                    io::stderr().write_all(&buffer[..n])
                } else {
                    io::stdout().write_all(&buffer[..n])
                };
                let mut tail = tail.lock().expect("tail");
                tail.extend(&buffer[..n]);
                let excess = tail.len().saturating_sub(TAIL_BYTES);
                tail.drain(..excess);
            }
            let _ = done.send(());
        });
    }
    finished
}

/// The environment an init script gets on top of bootlace's own.
pub fn environment(identity: &Identity, tag: &str, release: &Path) -> BTreeMap<String, String> {
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
    // Extras never shadow the variables above (an extra named `tag`, say).
    for (key, value) in &identity.extra {
        env.entry(format!("BOOTLACE_{}", key.to_ascii_uppercase()))
            .or_insert_with(|| value.clone());
    }
    env
}
