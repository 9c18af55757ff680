//! Playbooks (DESIGN §6.10): `ansible-playbook -i localhost, -c local` in the release
//! dir, in an environment fixed by bootlace rather than by the image — the release's
//! roles and collections only, temp dirs and Ansible's home under the state dir, no
//! `ANSIBLE_*` variable inherited, the interpreter named — with the identity in a 0600
//! variables file and a callback of bootlace's own that writes one JSON line per task
//! result, read back for the report. bootlace installs nothing: a missing
//! `ansible-playbook` is one line that says what to install.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The callback, written under the state dir and enabled by the environment.
const CALLBACK: &str = include_str!("callback.py");
/// What is read of the callback's output; a playbook of many thousand tasks stops
/// being counted past it.
const EVENTS_MAX: u64 = 8 << 20;
/// Task names kept in the report, each of at most [`NAME_MAX`] characters.
pub const NAMES_MAX: usize = 50;
const NAME_MAX: usize = 200;
/// Paths a check lists.
const PATHS_MAX: usize = 100;

/// A play's totals, as Ansible's own recap counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tasks {
    pub ok: u64,
    pub changed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub unreachable: u64,
    pub rescued: u64,
    pub ignored: u64,
}

/// What a playbook did: its totals, the names of the tasks that changed something (or
/// would have, in check mode) and of those that failed, and the paths changed tasks
/// name (never their contents: a diff may hold a secret).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Results {
    pub tasks: Tasks,
    pub changed: Vec<String>,
    pub failed: Vec<String>,
    pub paths: Vec<String>,
}

/// Where a playbook runs from: the release, its init root, bootlace's work dir for
/// Ansible (`<state>/ansible`), and how.
pub struct Setting<'a> {
    pub release: &'a Path,
    pub root: &'a Path,
    pub work: &'a Path,
    pub mode: Mode,
}

/// How a playbook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// `--check --diff`: what would change, changing nothing.
    Check,
    /// `--syntax-check`: parsed, with every role and module resolved, nothing run.
    Syntax,
}

/// The program a runner's command names, found: as given when it holds a `/`, else
/// on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

/// One line that says what to install when `ansible-playbook` is not there.
pub fn missing(program: &str) -> String {
    let place = if program.contains('/') {
        format!("{program} is not an executable file")
    } else {
        "it is not on PATH".to_owned()
    };
    format!(
        "a playbook init needs {program}, and {place}: install ansible-core on the image \
         (pip install ansible-core, or the distribution's ansible-core package) or name it \
         with [init.runners.ansible] command; bootlace installs nothing at boot"
    )
}

/// `ansible-playbook --version`'s first line (`ansible-playbook [core 2.19.4]`), for
/// `plan`; `None` when it does not answer within 20 s.
pub fn version(program: &Path) -> Option<String> {
    let mut child = Command::new(program)
        .arg("--version")
        .env("ANSIBLE_NOCOLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = String::new();
    child.stdout.take()?.take(4096).read_to_string(&mut text).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| crate::text::printable(line, 120))
}

/// The interpreter `ansible-playbook` itself runs under (its `#!` line), which has
/// Ansible's modules' dependencies: passed as `ansible_python_interpreter`, since
/// Ansible's discovery may pick another. `/usr/bin/python3` when the line names none.
pub fn interpreter(program: &Path) -> String {
    let mut first = [0u8; 256];
    let n = std::fs::File::open(program)
        .and_then(|mut f| f.read(&mut first))
        .unwrap_or(0);
    let line = first[..n].split(|&b| b == b'\n').next().unwrap_or_default();
    let named = line
        .strip_prefix(b"#!")
        .map(|rest| String::from_utf8_lossy(rest).trim().to_owned())
        .and_then(|shebang| {
            let mut words = shebang.split_whitespace();
            let first = words.next()?.to_owned();
            match first.rsplit('/').next() {
                Some("env") => words
                    .find(|w| !w.starts_with('-'))
                    .filter(|w| w.starts_with("python"))
                    .and_then(find_program)
                    .map(|p| p.display().to_string()),
                Some(name) if name.starts_with("python") => Some(first),
                _ => None,
            }
        });
    named.unwrap_or_else(|| "/usr/bin/python3".into())
}

/// Files that live only while one playbook runs: its variables and its events.
struct Scratch {
    vars: PathBuf,
    events: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.vars);
        let _ = std::fs::remove_file(&self.events);
    }
}

/// The command that runs `playbook` under `setting`, with the files it needs made:
/// the work dir (0700) with the callback and an empty config, the variables file
/// (0600: the identity's `BOOTLACE_*` variables as `bootlace_*`, never a secret's
/// value) and the events file.
pub fn command(
    program: &Path,
    args: &[String],
    playbook: &Path,
    setting: &Setting<'_>,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<Prepared> {
    let work = setting.work;
    for dir in [
        work.to_owned(),
        work.join("plugins"),
        work.join("tmp"),
        work.join("home"),
    ] {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| anyhow::anyhow!("making {}: {e}", dir.display()))?;
    }
    let callback = work.join("plugins/bootlace.py");
    if std::fs::read(&callback).ok().as_deref() != Some(CALLBACK.as_bytes()) {
        crate::files::write_atomic(&callback, CALLBACK.as_bytes(), 0o600)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", callback.display()))?;
    }
    let empty_config = work.join("ansible.cfg");
    if !empty_config.is_file() {
        crate::files::write_atomic(&empty_config, b"", 0o600)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", empty_config.display()))?;
    }
    let unique = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let scratch = Scratch {
        vars: work.join(format!("vars-{unique}.json")),
        events: work.join(format!("events-{unique}.jsonl")),
    };
    let mut vars = serde_json::Map::new();
    for (key, value) in env {
        let Some(name) = key.strip_prefix("BOOTLACE_") else {
            continue;
        };
        let name = format!("bootlace_{}", name.to_ascii_lowercase());
        if name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            vars.insert(name, value.clone().into());
        }
    }
    vars.insert("ansible_python_interpreter".into(), interpreter(program).into());
    private_file(&scratch.vars, &serde_json::to_vec_pretty(&vars)?)?;
    private_file(&scratch.events, b"")?;

    let mut command = Command::new(program);
    command.args(args).args(["-i", "localhost,", "-c", "local", "-e"]);
    command.arg(format!("@{}", scratch.vars.display()));
    match setting.mode {
        Mode::Apply => {}
        Mode::Check => {
            command.args(["--check", "--diff"]);
        }
        Mode::Syntax => {
            command.arg("--syntax-check");
        }
    }
    command.arg(playbook);
    without_inherited_settings(&mut command);
    let release_config = setting.release.join("ansible.cfg");
    let config = if release_config.is_file() {
        release_config
    } else {
        empty_config
    };
    let mut added = env.clone();
    let path = |p: &Path| p.display().to_string();
    for (key, value) in [
        ("ANSIBLE_CONFIG", path(&config)),
        ("ANSIBLE_HOME", path(&work.join("home"))),
        ("ANSIBLE_LOCAL_TEMP", path(&work.join("tmp"))),
        ("ANSIBLE_REMOTE_TEMP", path(&work.join("tmp"))),
        ("ANSIBLE_ROLES_PATH", path(&setting.root.join("roles"))),
        (
            "ANSIBLE_COLLECTIONS_PATH",
            path(&setting.root.join("collections")),
        ),
        ("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "False".into()),
        ("ANSIBLE_CALLBACK_PLUGINS", path(&work.join("plugins"))),
        ("ANSIBLE_CALLBACKS_ENABLED", "bootlace".into()),
        ("ANSIBLE_NOCOLOR", "1".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False".into()),
        ("ANSIBLE_LOCALHOST_WARNING", "False".into()),
        ("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False".into()),
        ("BOOTLACE_ANSIBLE_EVENTS", path(&scratch.events)),
    ] {
        added.insert(key.into(), value);
    }
    // Boot units have no HOME; Ansible and the modules it runs expect one.
    if std::env::var_os("HOME").is_none() {
        added.insert("HOME".into(), home_of_this_user());
    }
    Ok(Prepared {
        command,
        env: added,
        scratch,
    })
}

/// A playbook's command and environment, and the files it needs while it runs (removed
/// when this is dropped).
pub struct Prepared {
    command: Command,
    pub env: BTreeMap<String, String>,
    scratch: Scratch,
}

impl Prepared {
    /// The command, to run once; the files stay until this is dropped.
    pub fn take_command(&mut self) -> Command {
        std::mem::replace(&mut self.command, Command::new("false"))
    }

    /// Where the callback writes.
    pub fn events(&self) -> &Path {
        &self.scratch.events
    }
}

/// No `ANSIBLE_*` variable of bootlace's own environment reaches `command`: Ansible is
/// configured by the release (and by bootlace), the same on every image.
pub fn without_inherited_settings(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANSIBLE_") {
            command.env_remove(key);
        }
    }
}

/// A file only its owner reads, made new.
fn private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("making {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// This user's home from the password database, else `/root` or `/`.
fn home_of_this_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if !entry.is_null() && !(*entry).pw_dir.is_null() {
            return std::ffi::CStr::from_ptr((*entry).pw_dir)
                .to_string_lossy()
                .into_owned();
        }
        if libc::getuid() == 0 {
            "/root".into()
        } else {
            "/".into()
        }
    }
}

/// One line of the callback's output.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    Task {
        status: String,
        task: String,
        #[serde(default)]
        paths: Vec<String>,
    },
    Stats {
        ok: u64,
        changed: u64,
        failures: u64,
        skipped: u64,
        unreachable: u64,
        rescued: u64,
        ignored: u64,
    },
}

/// What the events file says, capped and made printable; the totals counted from
/// the task lines when the play ended before its recap.
pub fn results(events: &Path) -> Results {
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(events) {
        let _ = file.take(EVENTS_MAX).read_to_string(&mut text);
    }
    let mut results = Results::default();
    let mut counted = Tasks::default();
    let mut recap = None;
    let keep = |list: &mut Vec<String>, name: &str, cap: usize, limit: usize| {
        let name = crate::text::printable(name, limit);
        if list.len() < cap && !list.contains(&name) {
            list.push(name);
        }
    };
    for line in text.lines() {
        match serde_json::from_str::<Event>(line) {
            Ok(Event::Task { status, task, paths }) => match status.as_str() {
                "changed" => {
                    counted.changed += 1;
                    counted.ok += 1;
                    keep(&mut results.changed, &task, NAMES_MAX, NAME_MAX);
                    for path in &paths {
                        keep(&mut results.paths, path, PATHS_MAX, 512);
                    }
                }
                "ok" => counted.ok += 1,
                "failed" => {
                    counted.failed += 1;
                    keep(&mut results.failed, &task, NAMES_MAX, NAME_MAX);
                }
                "ignored" => counted.ignored += 1,
                "skipped" => counted.skipped += 1,
                "unreachable" => {
                    counted.unreachable += 1;
                    keep(&mut results.failed, &task, NAMES_MAX, NAME_MAX);
                }
                _ => {}
            },
            Ok(Event::Stats {
                ok,
                changed,
                failures,
                skipped,
                unreachable,
                rescued,
                ignored,
            }) => {
                recap = Some(Tasks {
                    ok,
                    changed,
                    failed: failures,
                    skipped,
                    unreachable,
                    rescued,
                    ignored,
                })
            }
            Err(_) => {}
        }
    }
    results.tasks = recap.unwrap_or(counted);
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recap_wins_and_names_are_kept_once_printable_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let mut lines = vec![
            r#"{"event":"task","status":"changed","task":"write \u001b[31mconf","paths":["/etc/x.conf"]}"#
                .to_owned(),
            r#"{"event":"task","status":"changed","task":"write \u001b[31mconf","paths":["/etc/x.conf"]}"#
                .to_owned(),
            r#"{"event":"task","status":"failed","task":"start it"}"#.to_owned(),
            "not json at all".to_owned(),
        ];
        for i in 0..80 {
            lines.push(format!(r#"{{"event":"task","status":"changed","task":"t{i}"}}"#));
        }
        std::fs::write(&events, lines.join("\n")).unwrap();
        let counted = results(&events);
        assert_eq!(counted.tasks.changed, 82);
        assert_eq!(counted.tasks.failed, 1);
        assert_eq!(counted.changed.len(), NAMES_MAX);
        assert!(!counted.changed[0].contains('\u{1b}'), "{:?}", counted.changed[0]);
        assert_eq!(counted.paths, ["/etc/x.conf"]);
        assert_eq!(counted.failed, ["start it"]);

        lines.push(
            r#"{"event":"stats","ok":3,"changed":1,"failures":0,"skipped":2,"unreachable":0,"rescued":0,"ignored":1}"#
                .to_owned(),
        );
        std::fs::write(&events, lines.join("\n")).unwrap();
        let recap = results(&events).tasks;
        assert_eq!(
            (recap.ok, recap.changed, recap.skipped, recap.ignored),
            (3, 1, 2, 1)
        );
    }

    #[test]
    fn the_interpreter_is_the_one_ansible_runs_under() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("ansible-playbook");
        std::fs::write(&program, "#!/opt/venv/bin/python3.11\nimport sys\n").unwrap();
        assert_eq!(interpreter(&program), "/opt/venv/bin/python3.11");
        std::fs::write(&program, "#!/bin/sh\nexec something\n").unwrap();
        assert_eq!(interpreter(&program), "/usr/bin/python3");
        std::fs::write(&program, "#!/usr/bin/env sh\n").unwrap();
        assert_eq!(interpreter(&program), "/usr/bin/python3");
    }
}
