//! Running a command the way init scripts and health commands run: in a process group
//! of its own, under a bound (SIGTERM, a grace period, then SIGKILL to the group), with
//! SIGTERM and SIGINT to bootlace forwarded to it during a boot run, its output relayed
//! as it comes and its tail kept for the report; daemons it leaves holding the pipes do
//! not hold bootlace. Also the boot id and ending a group recorded before a crash.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Output kept for the report.
pub const TAIL_BYTES: usize = 64 << 10;
/// Between SIGTERM and SIGKILL at the timeout.
const GRACE: Duration = Duration::from_secs(3);
/// How long output is still read after the script exits, before the pipes a daemon it
/// started holds open are handed to a forwarder.
const DRAIN: Duration = Duration::from_millis(200);
/// How often a relay looks up from a quiet pipe to see whether to stop.
const POLL: Duration = Duration::from_millis(50);

/// What a command (an init script, a health command) did, as the report records it.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub script: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub output_tail: String,
    #[serde(skip)]
    pub timed_out: bool,
    /// The signal (SIGTERM, SIGINT) that stopped bootlace while the script ran; the
    /// script's process group was sent it too.
    #[serde(skip)]
    pub stopped_by: Option<&'static str>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.stopped_by.is_none()
    }
}

/// How a command is run: its bound, where its output goes, what it is called in the
/// log, and whom to tell its process id once it started.
pub struct How<'a> {
    pub timeout: Duration,
    /// Its stdout goes to our stderr (`--json` runs, whose stdout is the report alone).
    pub quiet_stdout: bool,
    /// Its stdout goes nowhere (a playbook's check, whose diffs may hold secrets).
    pub discard_stdout: bool,
    /// SIGTERM and SIGINT to bootlace go to the command (a boot run).
    pub forward_signals: bool,
    /// `init script`, `health command`: for the log.
    pub what: &'static str,
    /// Called with the process id (its group's id too) once it runs.
    pub started: Option<&'a dyn Fn(u32)>,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): a process group recorded under
/// another boot is long gone, whatever has its number now.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Ends what is left of process group `group` (an init script whose bootlace was
/// killed): SIGTERM, then SIGKILL after the grace period. Whether anything was left.
pub fn end_group(group: u32) -> bool {
    let Ok(group) = i32::try_from(group) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the group exists.
    if group <= 1 || unsafe { libc::kill(-group, 0) } != 0 {
        return false;
    }
    signal_group(group, libc::SIGTERM);
    let grace = Instant::now() + GRACE;
    // SAFETY: as above.
    while Instant::now() < grace && unsafe { libc::kill(-group, 0) } == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(group, libc::SIGKILL);
    true
}

/// Runs `command` in `dir` as an init script runs (DESIGN §5): its own process group,
/// output relayed and its tail kept, stopped at `timeout` or when bootlace is told to
/// stop. The outcome's `script` is left empty for the caller to name.
/// `forward_signals`: SIGTERM and SIGINT to bootlace go to the command (a boot run);
/// otherwise they are left to the caller, and the command runs to its end (the agent
/// finishes the step in progress).
pub fn execute(
    mut command: Command,
    dir: &Path,
    env: &BTreeMap<String, String>,
    how: &How<'_>,
) -> anyhow::Result<Outcome> {
    let (timeout, quiet_stdout, forward_signals) = (how.timeout, how.quiet_stdout, how.forward_signals);
    command
        .current_dir(dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if how.discard_stdout {
        command.stdout(Stdio::null());
    }
    // From here to the report, SIGTERM and SIGINT are passed on to the script.
    let signals = Signals::catch(forward_signals)?;
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| anyhow::anyhow!("starting it: {e}"))?;
    if let Some(started) = how.started {
        started(child.id());
    }
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES)));
    let stop = Arc::new(AtomicBool::new(false));
    let relays = [
        Relay::start(child.stdout.take().map(OwnedFd::from), quiet_stdout, &tail, &stop),
        Relay::start(child.stderr.take().map(OwnedFd::from), true, &tail, &stop),
    ];
    let waited = wait(&mut child, timeout, &signals, how.what);
    let duration_ms = started.elapsed().as_millis() as u64;
    if waited.is_err() {
        // Waiting itself failed: the script must not outlive the run unwatched.
        signal_group(child.id() as i32, libc::SIGKILL);
        let _ = child.wait();
    }
    finish_relays(relays, &stop);
    let (status, timed_out, stopped_by) = waited.map_err(|e| anyhow::anyhow!("waiting for it: {e}"))?;
    // A signal that came after the script ended still stops this run.
    let stopped_by = stopped_by.or_else(|| signals.caught().map(signal_name));
    let tail = tail.lock().expect("tail").iter().copied().collect::<Vec<u8>>();
    Ok(Outcome {
        script: String::new(),
        exit_code: status.code().or_else(|| status.signal().map(|s| 128 + s)),
        duration_ms,
        output_tail: String::from_utf8_lossy(&tail).into_owned(),
        timed_out,
        stopped_by,
    })
}

/// SIGTERM and SIGINT, caught while a script runs instead of ending bootlace at once.
/// The handlers are installed once for the process; outside a script they act as the
/// default (termination), so a deploy can still be stopped as before.
pub struct Signals {
    caught: Arc<AtomicUsize>,
    default_action: Arc<AtomicBool>,
    /// `false`: nothing is caught here (`caught` stays empty).
    active: bool,
}

static SIGNALS: std::sync::OnceLock<(Arc<AtomicUsize>, Arc<AtomicBool>)> = std::sync::OnceLock::new();
/// Catchers alive at once (a health check's, and each try's inside it): the default
/// action comes back with the last, and the first starts from nothing caught.
static DEPTH: AtomicUsize = AtomicUsize::new(0);

impl Signals {
    /// From now until the result is dropped, SIGTERM and SIGINT are caught (when
    /// `active`) instead of ending bootlace.
    pub fn catch(active: bool) -> io::Result<Self> {
        if !active {
            return Ok(Self {
                caught: Arc::new(AtomicUsize::new(0)),
                default_action: Arc::new(AtomicBool::new(true)),
                active,
            });
        }
        let (caught, default_action) = match SIGNALS.get() {
            Some(installed) => installed.clone(),
            None => {
                let caught = Arc::new(AtomicUsize::new(0));
                let default_action = Arc::new(AtomicBool::new(true));
                for signal in [libc::SIGTERM, libc::SIGINT] {
                    signal_hook::flag::register_conditional_default(signal, default_action.clone())?;
                    signal_hook::flag::register_usize(signal, caught.clone(), signal as usize)?;
                }
                SIGNALS.get_or_init(|| (caught, default_action)).clone()
            }
        };
        if DEPTH.fetch_add(1, Ordering::SeqCst) == 0 {
            caught.store(0, Ordering::SeqCst);
        }
        default_action.store(false, Ordering::SeqCst);
        Ok(Self {
            caught,
            default_action,
            active,
        })
    }

    /// The name of the signal caught, if one was.
    pub fn caught_name(&self) -> Option<&'static str> {
        self.caught().map(signal_name)
    }

    fn caught(&self) -> Option<i32> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal as i32),
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if self.active && DEPTH.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.default_action.store(true, Ordering::SeqCst);
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        _ => "SIGTERM",
    }
}

/// Waits for the script. At the timeout, or when bootlace itself is told to stop, its
/// process group gets SIGTERM (or the signal bootlace got), then SIGKILL after a grace
/// period. Returns the status, whether it timed out, and the signal that stopped us.
fn wait(
    child: &mut Child,
    timeout: Duration,
    signals: &Signals,
    what: &str,
) -> io::Result<(std::process::ExitStatus, bool, Option<&'static str>)> {
    let deadline = Instant::now() + timeout;
    let group = child.id() as i32;
    let (signal, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false, None));
        }
        if let Some(signal) = signals.caught() {
            tracing::warn!(
                "{}: passing it to the {what} and waiting up to {} for it",
                signal_name(signal),
                humantime::format_duration(GRACE)
            );
            break (signal, false);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "{what} timed out after {}; stopping it",
                humantime::format_duration(timeout)
            );
            break (libc::SIGTERM, true);
        }
        std::thread::sleep(Duration::from_millis(10).min(deadline - Instant::now()));
    };
    let stopped_by = (!timed_out).then(|| signal_name(signal));
    signal_group(group, signal);
    let grace = Instant::now() + GRACE;
    while Instant::now() < grace {
        if let Some(status) = child.try_wait()? {
            // The script is gone; its children may not be.
            signal_group(group, libc::SIGKILL);
            return Ok((status, timed_out, stopped_by));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_group(group, libc::SIGKILL);
    Ok((child.wait()?, timed_out, stopped_by))
}

fn signal_group(group: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Copies one of the script's pipes to our stdout (or stderr) and into the shared
/// tail, until the pipe closes or it is told to stop.
struct Relay {
    thread: Option<std::thread::JoinHandle<Option<OwnedFd>>>,
    closed: std::sync::mpsc::Receiver<()>,
    to_stderr: bool,
}

impl Relay {
    fn start(
        pipe: Option<OwnedFd>,
        to_stderr: bool,
        tail: &Arc<Mutex<VecDeque<u8>>>,
        stop: &Arc<AtomicBool>,
    ) -> Self {
        let (done, closed) = std::sync::mpsc::channel();
        let (tail, stop) = (tail.clone(), stop.clone());
        let thread = pipe.map(|pipe| {
            std::thread::spawn(move || {
                let open = copy_until_closed(&pipe, to_stderr, &tail, &stop);
                let _ = done.send(());
                open.then_some(pipe)
            })
        });
        Self {
            thread,
            closed,
            to_stderr,
        }
    }
}

/// Relays `pipe` until its end (`false`) or until `stop` is set while writers still
/// hold it open (`true`).
fn copy_until_closed(pipe: &OwnedFd, to_stderr: bool, tail: &Mutex<VecDeque<u8>>, stop: &AtomicBool) -> bool {
    let mut buffer = [0u8; 8192];
    // Reads through a borrowed descriptor: the pipe itself is handed on if still open.
    // SAFETY: `pipe` outlives `file`, which is never closed (ManuallyDrop).
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(pipe.as_raw_fd()) });
    loop {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        if !readable(pipe, POLL) {
            continue;
        }
        let n = match file.read(&mut buffer) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        // Flushed at once: what a forwarder writes later must come after it.
        let _ = if to_stderr {
            io::stderr().write_all(&buffer[..n])
        } else {
            let mut out = io::stdout().lock();
            out.write_all(&buffer[..n]).and_then(|_| out.flush())
        };
        let mut tail = tail.lock().expect("tail");
        tail.extend(&buffer[..n]);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
    }
}

/// Whether `fd` has data or has closed, waiting at most `timeout`.
fn readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) > 0 }
}

/// After the script exits: reads what it wrote, then hands any pipe that a process it
/// started still holds (a daemon, `./server &`) to a forwarder that outlives bootlace,
/// so that the daemon keeps its output going where bootlace's went (the journal,
/// under systemd) and never dies of SIGPIPE when bootlace exits.
fn finish_relays(relays: [Relay; 2], stop: &AtomicBool) {
    let drain_until = Instant::now() + DRAIN;
    for relay in &relays {
        if relay.thread.is_some() {
            let _ = relay
                .closed
                .recv_timeout(drain_until.saturating_duration_since(Instant::now()));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for mut relay in relays {
        let open = relay.thread.take().and_then(|t| t.join().ok()).flatten();
        if let Some(pipe) = open {
            forward(pipe, relay.to_stderr);
        }
    }
}

/// Starts `cat` from `pipe` to our stdout or stderr, in a process group of its own,
/// and leaves it running: it ends when the last writer closes the pipe.
fn forward(pipe: OwnedFd, to_stderr: bool) {
    let output = if to_stderr {
        io::stderr().as_fd().try_clone_to_owned()
    } else {
        io::stdout().as_fd().try_clone_to_owned()
    };
    let started = output.and_then(|output| {
        Command::new("cat")
            .stdin(Stdio::from(pipe))
            .stdout(Stdio::from(output))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    });
    match started {
        Ok(child) => tracing::info!(
            "processes the init script started still write to its {}; forwarding it (cat, pid {})",
            if to_stderr { "stderr" } else { "stdout" },
            child.id()
        ),
        Err(err) => tracing::warn!(
            "processes the init script started still write to it, but their output cannot be forwarded: cat: {err}"
        ),
    }
}
