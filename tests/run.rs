//! Black-box: the boot flow of DESIGN §1 — `bootlace run`, `plan` and `status` — with
//! the IMDS emulator for identity and `moto_server` for the store.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::imds::{self, Imds, Options};
use support::s3;
use support::{Outcome, bootlace, run, write};

/// One simulated instance: an IMDS, a prefix in moto, a state dir, and a scratch dir.
struct Machine {
    dir: tempfile::TempDir,
    imds: Imds,
    place: String,
    config: PathBuf,
}

impl Machine {
    fn new(config: &str) -> Self {
        let imds = Imds::start(Options {
            user_data: Some(b"environment=prod\nrole=web\ncontext=b\nteam=storage\n".to_vec()),
            ..Options::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let config = write(dir.path(), "config.toml", config);
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        Self {
            dir,
            imds,
            place: s3::moto().place(),
            config,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut command = bootlace();
        command
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", self.imds.endpoint())
            .env("AWS_ENDPOINT_URL", &s3::moto().endpoint)
            .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
            .env("BOOTLACE_STORE", format!("s3://{}", self.place))
            .env("BOOTLACE_STATE_DIR", self.path("state"))
            .env("BOOTLACE_CONFIG", &self.config)
            .env("LOG_DIR", self.path("log"));
        command
    }

    fn run(&self, args: &[&str]) -> Outcome {
        run(self.command().args(args))
    }

    /// Pushes a release whose bootstrap/ holds `scripts` (path, body) and points prod at it.
    fn release(&self, tag: &str, scripts: &[(&str, &str)]) {
        let tree = self.path(&format!("tree-{tag}"));
        std::fs::create_dir_all(tree.join("app")).unwrap();
        std::fs::write(tree.join("app/version"), tag).unwrap();
        for (path, body) in scripts {
            let file = tree.join("bootstrap").join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = self.run(&[
            "release",
            "push",
            tree.to_str().unwrap(),
            "--tag",
            tag,
            "--env",
            "prod",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }

    fn report(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path("state/last-run.json")).unwrap()).unwrap()
    }

    fn log(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn clear_log(&self) {
        for name in self.log() {
            std::fs::remove_file(self.path("log").join(name)).unwrap();
        }
    }
}

const MACHINE: &str = "b/prod/i-0123456789abcdef0.sh";
const ENVIRONMENT: &str = "b/prod/bootstrapper.sh";
const CONTEXT: &str = "b/bootstrapper.sh";

#[test]
fn exactly_the_most_specific_script_runs() {
    let machine = Machine::new("");
    let all = [
        (MACHINE, "touch \"$LOG_DIR/machine\""),
        (ENVIRONMENT, "touch \"$LOG_DIR/environment\""),
        (CONTEXT, "touch \"$LOG_DIR/context\""),
    ];
    for (tag, scripts, expected) in [
        ("v1", &all[..], "machine"),
        ("v2", &all[1..], "environment"),
        ("v3", &all[2..], "context"),
    ] {
        machine.clear_log();
        machine.release(tag, scripts);
        let out = machine.run(&["run"]);
        assert_eq!(out.code, 0, "{tag}: {}", out.stderr);
        assert_eq!(machine.log(), [expected], "{tag}");
        let report = machine.report();
        assert_eq!(report["tag"], tag);
        assert_eq!(report["deployed"], true);
        assert_eq!(report["init"]["exit_code"], 0);
    }
}

#[test]
fn the_script_sees_its_identity_and_runs_in_the_release() {
    let machine = Machine::new("");
    machine.release("v1", &[(CONTEXT, "env | grep ^BOOTLACE_ | sort > \"$LOG_DIR/env\"; pwd > \"$LOG_DIR/pwd\"; echo to-out; echo to-err >&2")]);
    let out = machine.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env: BTreeMap<String, String> = std::fs::read_to_string(machine.path("log/env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let release = machine.path("state/releases/v1");
    assert_eq!(env["BOOTLACE_ENVIRONMENT"], "prod");
    assert_eq!(env["BOOTLACE_ROLE"], "web");
    assert_eq!(env["BOOTLACE_CONTEXT"], "b");
    assert_eq!(env["BOOTLACE_MACHINE_ID"], imds::INSTANCE_ID);
    assert_eq!(env["BOOTLACE_TAG"], "v1");
    assert_eq!(env["BOOTLACE_RELEASE_DIR"], release.to_str().unwrap());
    assert_eq!(env["BOOTLACE_TEAM"], "storage");
    assert!(!env.keys().any(|k| k.contains("AWS")));
    let pwd = std::fs::read_to_string(machine.path("log/pwd")).unwrap();
    assert_eq!(Path::new(pwd.trim()), release.canonicalize().unwrap());
    // Output streams through, and its tail is in the report.
    assert!(out.stdout.contains("to-out") && out.stderr.contains("to-err"));
    let tail = machine.report()["init"]["output_tail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tail.contains("to-out") && tail.contains("to-err"), "{tail}");
}

#[test]
fn a_failing_script_fails_the_run_with_its_exit_code() {
    let machine = Machine::new("");
    machine.release("v1", &[(ENVIRONMENT, "echo broken; exit 7")]);
    let out = machine.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.assert_one_error_line().contains("exited with 7"),
        "{}",
        out.stderr
    );
    let report = machine.report();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["init"]["exit_code"], 7);
    assert_eq!(report["init"]["script"], ENVIRONMENT);
    assert!(report["error"].as_str().unwrap().contains("exited with 7"));
    let status = machine.run(&["status"]);
    assert_eq!(status.code, 1, "status exits as the run did");
}

#[test]
fn a_hanging_script_and_its_children_are_killed_at_the_timeout() {
    let machine = Machine::new("[init]\ntimeout = \"1s\"\n");
    machine.release(
        "v1",
        &[(
            CONTEXT,
            "sleep 300 & echo $! > \"$LOG_DIR/child\"; echo $$ > \"$LOG_DIR/script\"; sleep 300",
        )],
    );
    let started = Instant::now();
    let out = machine.run(&["run"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("timed out after 1s"),
        "{}",
        out.stderr
    );
    for name in ["child", "script"] {
        let pid = std::fs::read_to_string(machine.path("log").join(name)).unwrap();
        assert!(!running(pid.trim()), "{name} ({}) still runs", pid.trim());
    }
    assert_eq!(machine.report()["status"], "failed");
}

#[test]
fn no_candidate_is_success_with_no_init_script() {
    let machine = Machine::new("");
    machine.release("v1", &[("other/place.sh", "exit 1")]);
    let out = machine.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("no init script"), "{}", out.stdout);
    let report = machine.report();
    assert_eq!(report["status"], "ok");
    assert_eq!(report["init"], Value::Null);
}

#[test]
fn an_unreachable_store_degrades_a_run_with_a_current_release() {
    let machine = Machine::new("[store]\ndeadline = \"1s\"\n");
    machine.release("v1", &[(CONTEXT, "touch \"$LOG_DIR/ran\"")]);
    assert_eq!(machine.run(&["run"]).code, 0);
    machine.clear_log();
    let out = run(machine
        .command()
        .env("AWS_ENDPOINT_URL", support::DEAD_ENDPOINT)
        .arg("run"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(machine.log(), ["ran"], "init ran against the current release");
    let report = machine.report();
    assert_eq!(report["status"], "degraded");
    assert_eq!(report["tag"], "v1");
    assert!(report["error"].as_str().unwrap().contains("store unreachable"));
    assert_eq!(machine.run(&["status"]).code, 3);

    // With no release yet, the same outage fails the boot.
    let fresh = Machine::new("[store]\ndeadline = \"1s\"\n");
    let out = run(fresh
        .command()
        .env("AWS_ENDPOINT_URL", support::DEAD_ENDPOINT)
        .arg("run"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(fresh.report()["status"], "failed");
}

#[test]
fn the_report_is_exact_and_uploaded() {
    let machine = Machine::new("");
    machine.release("v1", &[(CONTEXT, "true")]);
    let out = machine.run(&["--json", "run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).expect("stdout is the report alone");
    let report = machine.report();
    assert_eq!(printed, report);
    let mut keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bootlace_version",
            "bytes_downloaded",
            "checked_at",
            "context",
            "deployed",
            "environment",
            "error",
            "files_reused",
            "finished_at",
            "format_version",
            "health",
            "hostname",
            "init",
            "machine_id",
            "previous_tag",
            "role",
            "rolled_back_from",
            "rollout",
            "sha256",
            "started_at",
            "status",
            "tag",
            "timings_ms",
            "trigger",
            "via"
        ]
    );
    // DESIGN §6.9: how the release arrived; a first deploy holds nothing to reuse, so
    // it is a full download with no fallback reason.
    assert_eq!(report["via"], "full");
    assert!(report["bytes_downloaded"].as_u64().unwrap() > 0);
    assert_eq!(report["files_reused"], 0);
    assert_eq!(report["format_version"], 2);
    assert_eq!(report["trigger"], "boot");
    assert!(report["checked_at"].is_string());
    let mut timings: Vec<&str> = report["timings_ms"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    timings.sort();
    assert_eq!(timings, ["deploy", "identity", "init", "total"]);
    let mut init: Vec<&str> = report["init"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    init.sort();
    assert_eq!(init, ["duration_ms", "exit_code", "output_tail", "script"]);
    let key = format!("reports/prod/web/{}.json", imds::INSTANCE_ID);
    let uploaded: Value =
        serde_json::from_slice(&s3::moto().object(&machine.place, &key).expect("uploaded")).unwrap();
    assert_eq!(uploaded, report);

    // A reboot: present, not downloaded again; runs/ keeps every report.
    assert_eq!(machine.run(&["run"]).code, 0);
    assert_eq!(machine.report()["deployed"], false);
    assert_eq!(std::fs::read_dir(machine.path("state/runs")).unwrap().count(), 2);
}

#[test]
fn plan_changes_nothing() {
    let machine = Machine::new("");
    machine.release("v1", &[(ENVIRONMENT, "true"), (CONTEXT, "true")]);
    let out = machine.run(&["plan"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("prod -> v1") && out.stdout.contains("would download"),
        "{}",
        out.stdout
    );
    assert!(!machine.path("state").exists(), "plan created the state dir");

    assert_eq!(machine.run(&["run"]).code, 0);
    let before = snapshot(&machine.path("state"));
    let out = machine.run(&["--json", "plan"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        snapshot(&machine.path("state")),
        before,
        "plan changed the state dir"
    );
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["tag"], "v1");
    assert_eq!(plan["present"], true);
    assert_eq!(plan["would_run"], ENVIRONMENT);
    let present: Vec<&Value> = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["present"])
        .collect();
    assert_eq!(
        present,
        [&Value::Bool(false), &Value::Bool(true), &Value::Bool(true)]
    );
}

#[test]
fn status_waits_for_a_run_in_progress() {
    let machine = Machine::new("");
    machine.release("v1", &[(CONTEXT, "sleep 2; exit 5")]);
    let mut running = machine
        .command()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let the run take the lock.
    let lock = machine.path("state/lock");
    let started = Instant::now();
    while !lock.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = machine.run(&["--json", "status", "--wait"]);
    let run_status = running.wait().unwrap();
    assert_eq!(run_status.code(), Some(1));
    assert_eq!(out.code, 1, "status exits as the run did: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        report["init"]["exit_code"], 5,
        "status saw the finished run, not an older one"
    );
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not), giving
/// a killed process a moment to die.
fn running(pid: &str) -> bool {
    let started = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
            .flatten();
        if !matches!(state, Some(s) if s != 'Z' && s != 'X') {
            return false;
        }
        if started.elapsed() > Duration::from_secs(3) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names, kinds, sizes, contents and mtimes of everything under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mtime = meta.modified().unwrap();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mtime:?}")
            } else if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&path).unwrap())
            } else {
                format!("file {mtime:?} {:?}", std::fs::read(&path).unwrap())
            };
            seen.insert(path.display().to_string(), what);
        }
    }
    seen
}
