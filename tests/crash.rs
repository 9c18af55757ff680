//! Crash points: `kill -9` at random moments of `deploy`, `run` and `rollback`, 100
//! trials in all. After every kill, `current` names a complete release (its mark is
//! there and its files are all there), and the next command recovers.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{bootlace, run, write};

struct Host {
    dir: tempfile::TempDir,
}

/// Files in each release: enough that a deploy takes a while to kill into.
const FILES: usize = 600;

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "user-data",
            "environment=prod\nrole=web\ncontext=b\nmachine_id=i-crash\n",
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut command = bootlace();
        command
            .env(
                "BOOTLACE_STORE",
                format!("file://{}", self.path("store").display()),
            )
            .env("BOOTLACE_STATE_DIR", self.path("state"))
            .env(
                "BOOTLACE_IDENTITY",
                format!("file:{}", self.path("user-data").display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn ok(&self, args: &[&str]) {
        let out = run(self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .args(args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }

    /// A release of `FILES` small files, a 2 MiB one, a `tag` file naming it, and an
    /// init script that takes a moment.
    fn push(&self, tag: &str) {
        let tree = self.path(&format!("tree-{tag}"));
        for i in 0..FILES {
            let dir = tree.join(format!("d{}", i % 10));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), format!("{tag} {i}")).unwrap();
        }
        std::fs::write(tree.join("big"), vec![tag.as_bytes()[1]; 2 << 20]).unwrap();
        std::fs::write(tree.join("tag"), tag).unwrap();
        let script = tree.join("bootstrap/b/bootstrapper.sh");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "#!/bin/sh\nsleep 0.05\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.ok(&["release", "push", tree.to_str().unwrap(), "--tag", tag]);
    }

    /// `current` names a complete release: marked, with every file of it.
    fn assert_current_complete(&self, context: &str) -> String {
        let current = self.path("state/current");
        let tag = std::fs::read_to_string(current.join("tag")).unwrap_or_else(|e| panic!("{context}: {e}"));
        let target = std::fs::read_link(&current).unwrap();
        assert_eq!(target, PathBuf::from(format!("releases/{tag}")), "{context}");
        assert!(
            self.path(&format!("state/marks/{tag}.json")).is_file(),
            "{context}: no mark"
        );
        assert!(!current.join(".bootlace-release.json").exists(), "{context}");
        let files: usize = (0..10)
            .map(|d| std::fs::read_dir(current.join(format!("d{d}"))).unwrap().count())
            .sum();
        assert_eq!(files, FILES, "{context}");
        assert_eq!(
            std::fs::metadata(current.join("big")).unwrap().len(),
            2 << 20,
            "{context}"
        );
        tag
    }

    /// Starts `args`, kills it after a random share of `full`, and checks the state.
    fn kill_during(&self, args: &[&str], full: Duration, rng: &mut fastrand::Rng) -> bool {
        let mut child = self.command().args(args).spawn().unwrap();
        std::thread::sleep(full.mul_f64(rng.f64() * 1.1));
        let _ = child.kill();
        let killed = !child.wait().unwrap().success();
        self.assert_current_complete(&format!("after kill -9 of {args:?}"));
        killed
    }

    fn timed(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        self.ok(args);
        started.elapsed()
    }

    fn promote(&self, tag: &str) {
        self.ok(&["release", "promote", tag, "--env", "prod"]);
    }

    /// Forgets `tag` locally, so that the next deploy of it downloads it again.
    fn forget(&self, tag: &str) {
        let dir = self.path(&format!("state/releases/{tag}"));
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

#[test]
fn kill_9_at_100_random_moments_of_deploy_run_and_rollback_never_breaks_current() {
    let host = Host::new();
    for tag in ["v1", "v2"] {
        host.push(tag);
    }
    host.promote("v1");
    host.ok(&["deploy"]);
    let mut rng = fastrand::Rng::with_seed(10);
    let mut killed = 0;
    // deploy: v1 current, v2 downloaded and switched to; 40 trials.
    host.promote("v2");
    let full = host.timed(&["deploy"]);
    for _ in 0..40 {
        host.ok(&["rollback", "--to", "v1"]);
        host.forget("v2");
        killed += usize::from(host.kill_during(&["deploy"], full, &mut rng));
        host.ok(&["deploy"]);
        assert_eq!(host.assert_current_complete("after recovery"), "v2");
    }
    // run: the whole boot flow, deploy and init; 40 trials.
    host.ok(&["rollback", "--to", "v1"]);
    host.forget("v2");
    let full = host.timed(&["run"]);
    for _ in 0..40 {
        host.ok(&["rollback", "--to", "v1"]);
        host.forget("v2");
        killed += usize::from(host.kill_during(&["run"], full, &mut rng));
        host.ok(&["run"]);
        assert_eq!(host.assert_current_complete("after recovery"), "v2");
    }
    // rollback: switching between two complete releases; 20 trials.
    let full = host.timed(&["rollback"]);
    for _ in 0..20 {
        killed += usize::from(host.kill_during(&["rollback"], full, &mut rng));
    }
    let leftovers: Vec<String> = std::fs::read_dir(host.path("state/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Most kills must land mid-command for the trials to mean anything.
    assert!(killed >= 50, "only {killed} of 100 kills interrupted a command");
    eprintln!("{killed} of 100 kill -9 trials interrupted a command");
}

#[test]
fn kill_9_at_30_random_moments_of_a_delta_rebuild_never_breaks_current() {
    let host = Host::new();
    host.push("v1");
    // v3: v1 with its tag file and one other file changed, so that it arrives as a
    // delta pack (DESIGN §6.9) rebuilt from v1's files.
    let tree = host.path("tree-v1");
    std::fs::write(tree.join("tag"), "v3").unwrap();
    std::fs::write(tree.join("d0/f0"), "changed").unwrap();
    let tree = tree.to_str().unwrap();
    host.ok(&["release", "push", tree, "--tag", "v3"]);
    host.ok(&["release", "delta", "v3", "--from", "v1"]);
    host.promote("v1");
    host.ok(&["deploy"]);
    host.promote("v3");
    let started = Instant::now();
    let out = run(host
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .args(["--json", "deploy"]));
    let full = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deployed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(deployed["arrival"]["via"], "delta", "{deployed}");
    let mut rng = fastrand::Rng::with_seed(26);
    let mut killed = 0;
    for _ in 0..30 {
        host.ok(&["rollback", "--to", "v1"]);
        host.forget("v3");
        killed += usize::from(host.kill_during(&["deploy"], full, &mut rng));
        host.ok(&["deploy"]);
        assert_eq!(host.assert_current_complete("after recovery"), "v3");
        // The base the rebuild copied from is untouched.
        assert_eq!(
            std::fs::read_to_string(host.path("state/releases/v1/d0/f0")).unwrap(),
            "v1 0"
        );
    }
    assert!(killed >= 15, "only {killed} of 30 kills interrupted a rebuild");
}
