//! Staged rollouts (DESIGN §6.3), run as an operator and a fleet of simulated
//! instances run them: the built binary, file identities, a `file://` store (moto for
//! the concurrency test), and the bucket formula recomputed here, independently.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::host::Host;
use support::{Outcome, run};

/// Every init script appends `<tag>` to `$LOG_DIR/init.log`; a release's health check
/// passes while its `healthy` file exists.
const CONFIG: &str = "[health]\ncommand = \"test -f healthy\"\ntries = 1\n";

/// The design's formula, written again here.
fn bucket(salt: &str, machine_id: &str) -> u64 {
    let digest = Sha256::digest(format!("bootlace-rollout\0{salt}\0{machine_id}"));
    u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000
}

fn is_in(salt: &str, machine_id: &str, percent: f64) -> bool {
    bucket(salt, machine_id) < (percent * 100.0).round() as u64
}

/// An operator's host and `n` instances on its store, each with a state dir and a
/// user-data file of its own (machine ids `i-00` …).
struct Fleet {
    host: Host,
    ids: Vec<String>,
}

impl Fleet {
    fn new(n: usize) -> Self {
        Self::with_config(n, CONFIG)
    }

    fn with_config(n: usize, config: &str) -> Self {
        let host = Host::new(config);
        let ids: Vec<String> = (0..n).map(|i| format!("i-{i:02}")).collect();
        for id in &ids {
            let dir = host.path(id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("user-data"),
                format!("environment=prod\nrole=web\ncontext=b\nmachine_id={id}\n"),
            )
            .unwrap();
        }
        Self { host, ids }
    }

    /// Pushes `tag` (healthy or not), without promoting it.
    fn release(&self, tag: &str, healthy: bool) {
        let mut files: Vec<(&str, &[u8])> = vec![("version", tag.as_bytes())];
        if healthy {
            files.push(("healthy", b"yes"));
        }
        self.host.push(tag, Some("true"), &files, false);
    }

    fn operator(&self, args: &[&str]) -> Outcome {
        self.host.run(args)
    }

    /// An operator command that must succeed.
    fn ok(&self, args: &[&str]) -> Outcome {
        let out = self.host.run(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out
    }

    /// Pushes v1 and the others, promotes v1 and boots every instance on it.
    fn on_v1(&self, others: &[(&str, bool)]) {
        self.release("v1", true);
        for (tag, healthy) in others {
            self.release(tag, *healthy);
        }
        self.ok(&["release", "promote", "v1", "--env", "prod"]);
        assert!(self.boot_all().iter().all(|&c| c == 0));
    }

    fn instance(&self, id: &str) -> Command {
        let dir = self.host.path(id);
        let mut command = self.host.command();
        command.env("BOOTLACE_STATE_DIR", dir.join("state")).env(
            "BOOTLACE_IDENTITY",
            format!("file:{}", dir.join("user-data").display()),
        );
        command
    }

    /// `bootlace run` on every instance; their exit codes.
    fn boot_all(&self) -> Vec<i32> {
        self.ids
            .iter()
            .map(|id| run(self.instance(id).arg("run")).code)
            .collect()
    }

    fn current(&self, id: &str) -> String {
        std::fs::read_link(self.host.path(id).join("state/current"))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn report(&self, id: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.host.path(id).join("state/last-run.json")).unwrap())
            .unwrap()
    }

    /// What each instance runs.
    fn running(&self) -> Vec<String> {
        self.ids.iter().map(|id| self.current(id)).collect()
    }

    /// What the formula says each instance runs at `percent` of `target` over `stable`.
    fn expected(&self, salt: &str, percent: f64, stable: &str, target: &str) -> Vec<String> {
        self.ids
            .iter()
            .map(|id| if is_in(salt, id, percent) { target } else { stable }.to_owned())
            .collect()
    }

    fn pointer(&self) -> Vec<u8> {
        std::fs::read(self.host.path("store/pointers/prod.json")).unwrap()
    }

    fn status(&self) -> Value {
        let out = self.operator(&["--json", "release", "rollout", "status", "--env", "prod"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }
}

#[test]
fn twenty_instances_move_exactly_as_the_formula_says() {
    let fleet = Fleet::new(20);
    fleet.on_v1(&[("v2", true)]);
    assert!(fleet.running().iter().all(|t| t == "v1"));

    let out = fleet.operator(&["release", "promote", "v2", "--env", "prod", "--percent", "10"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("rolling out v2 to 10%"), "{}", out.stdout);
    for percent in [10.0, 50.0, 100.0] {
        if percent > 10.0 {
            let p = percent.to_string();
            let out = fleet.operator(&["release", "rollout", "set", "--env", "prod", "--percent", &p]);
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
        assert!(fleet.boot_all().iter().all(|&c| c == 0));
        let expected = fleet.expected("v2", percent, "v1", "v2");
        assert_eq!(fleet.running(), expected, "at {percent}%");
        for id in &fleet.ids {
            let rollout = &fleet.report(id)["rollout"];
            assert_eq!(rollout["bucket"], bucket("v2", id), "{id}");
            assert_eq!(rollout["in"], is_in("v2", id, percent), "{id}");
            assert_eq!(rollout["target"], "v2");
            assert_eq!(rollout["percent"], percent);
        }
        let status = fleet.status();
        let on_target = expected.iter().filter(|t| *t == "v2").count();
        assert_eq!(status["instances"]["on_target"], on_target, "{status}");
        assert_eq!(status["instances"]["covered"], on_target, "{status}");
        assert_eq!(status["instances"]["known"], 20);
    }

    // Abort: everyone back to the stable tag, and their reports say so.
    let out = fleet.operator(&["release", "rollout", "abort", "--env", "prod"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(fleet.boot_all().iter().all(|&c| c == 0));
    assert!(fleet.running().iter().all(|t| t == "v1"));
    assert!(
        fleet
            .ids
            .iter()
            .all(|id| fleet.report(id)["tag"] == "v1" && fleet.report(id)["rollout"].is_null())
    );

    // Again at 50 %, then finish: the target is stable for all.
    fleet.ok(&["release", "promote", "v2", "--env", "prod", "--percent", "50"]);
    fleet.ok(&["release", "rollout", "finish", "--env", "prod"]);
    let pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    assert_eq!(
        (pointer["tag"].as_str(), pointer["format_version"].as_u64()),
        (Some("v2"), Some(1))
    );
    assert!(pointer.get("rollout").is_none());
    assert_eq!(pointer["history"][0]["tag"], "v1");
    assert!(fleet.boot_all().iter().all(|&c| c == 0));
    assert!(fleet.running().iter().all(|t| t == "v2"));
}

#[test]
fn timed_waves_follow_the_clock_and_a_halt_freezes_them() {
    let fleet = Fleet::new(20);
    fleet.release("v1", true);
    fleet.release("v2", true);
    fleet.ok(&["release", "promote", "v1", "--env", "prod"]);
    let start = humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
    let at = |minutes: u64| {
        humantime::format_rfc3339_seconds(start + Duration::from_secs(minutes * 60)).to_string()
    };
    let operator_at =
        |minutes: u64, args: &[&str]| run(fleet.host.command().env("BOOTLACE_NOW", at(minutes)).args(args));
    let out = operator_at(
        0,
        &[
            "release",
            "promote",
            "v2",
            "--env",
            "prod",
            "--waves",
            "10@0s,50@1h,100@2h",
            "--salt",
            "s1",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let boot_at = |minutes: u64| {
        for id in &fleet.ids {
            let out = run(fleet.instance(id).env("BOOTLACE_NOW", at(minutes)).arg("run"));
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
    };
    boot_at(30);
    assert_eq!(
        fleet.running(),
        fleet.expected("s1", 10.0, "v1", "v2"),
        "10 % for the first hour"
    );
    boot_at(61);
    assert_eq!(
        fleet.running(),
        fleet.expected("s1", 50.0, "v1", "v2"),
        "50 % after 1 h"
    );

    // Halted at 70 min: still 50 % long after the 2 h wave was due.
    assert_eq!(
        operator_at(70, &["release", "rollout", "halt", "--env", "prod"]).code,
        0
    );
    boot_at(300);
    assert_eq!(fleet.running(), fleet.expected("s1", 50.0, "v1", "v2"), "frozen");
    // Resumed at 300 min: the waves take up where they stood (50 min to the next).
    assert_eq!(
        operator_at(300, &["release", "rollout", "resume", "--env", "prod"]).code,
        0
    );
    boot_at(340);
    assert_eq!(
        fleet.running(),
        fleet.expected("s1", 50.0, "v1", "v2"),
        "the pause shifted the waves"
    );
    boot_at(351);
    assert!(
        fleet.running().iter().all(|t| t == "v2"),
        "100 % once the shifted wave is due"
    );
}

#[test]
fn growing_is_refused_while_a_canary_rolled_back() {
    let fleet = Fleet::new(20);
    fleet.on_v1(&[("v3", false)]);
    fleet.ok(&["release", "promote", "v3", "--env", "prod", "--percent", "25"]);
    let codes = fleet.boot_all();
    let canaries = fleet.ids.iter().filter(|id| is_in("v3", id, 25.0)).count();
    assert!(canaries > 0, "no instance at 25 %");
    assert_eq!(codes.iter().filter(|&&c| c == 4).count(), canaries, "{codes:?}");
    assert!(
        fleet.running().iter().all(|t| t == "v1"),
        "the canaries rolled back"
    );

    let before = fleet.pointer();
    let out = fleet.operator(&["release", "rollout", "set", "--env", "prod", "--percent", "50"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains(&format!("{canaries} instances failed it or rolled back")),
        "{line}"
    );
    assert_eq!(fleet.pointer(), before, "the pointer is unchanged");
    let status = fleet.status();
    assert_eq!(status["instances"]["rolled_back"], canaries);
    // Halting, resuming and shrinking do not make the canaries try v3 again.
    fleet.ok(&["release", "rollout", "halt", "--env", "prod"]);
    fleet.ok(&["release", "rollout", "resume", "--env", "prod"]);
    fleet.ok(&["release", "rollout", "set", "--env", "prod", "--percent", "20"]);
    let codes = fleet.boot_all();
    assert!(
        !codes.contains(&4),
        "a canary tried the failed target again: {codes:?}"
    );
    assert!(fleet.running().iter().all(|t| t == "v1"));
    let out = fleet.operator(&[
        "release",
        "rollout",
        "set",
        "--env",
        "prod",
        "--percent",
        "50",
        "--force",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Growing past the failures with --force is a retry: the canaries try v3 again.
    let codes = fleet.boot_all();
    let at_50 = fleet.ids.iter().filter(|id| is_in("v3", id, 50.0)).count();
    assert_eq!(codes.iter().filter(|&&c| c == 4).count(), at_50, "{codes:?}");
    // `release rollback` during a rollout is an abort.
    fleet.ok(&["release", "rollback", "--env", "prod"]);
    let pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    assert_eq!(pointer["tag"], "v1");
    assert!(pointer.get("rollout").is_none());
}

#[test]
fn bad_rollouts_are_refused_and_change_nothing() {
    let fleet = Fleet::new(1);
    fleet.release("v1", true);
    fleet.release("v2", true);
    let out = fleet.operator(&["release", "promote", "v2", "--env", "prod", "--percent", "10"]);
    assert_eq!(out.code, 1, "no stable tag yet: {}", out.stderr);
    assert!(out.assert_one_error_line().contains("needs a stable tag first"));
    fleet.ok(&["release", "promote", "v1", "--env", "prod"]);
    let before = fleet.pointer();
    for (args, code, says) in [
        (vec!["--percent", "150"], 2, "from 0 to 100"),
        (vec!["--percent", "-1"], 2, "from 0 to 100"),
        (vec!["--percent", "abc"], 2, "from 0 to 100"),
        (vec!["--waves", "10@2h,1@3h,100@4h"], 2, "must rise"),
        (vec!["--waves", "1@0s,50@1h"], 2, "reach 100"),
        (vec!["--percent", "10", "--salt", "a\nb"], 2, "salt"),
    ] {
        let mut full = vec!["release", "promote", "v2", "--env", "prod"];
        full.extend(args.iter().copied());
        let out = fleet.operator(&full);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert_eq!(fleet.pointer(), before, "{args:?} changed the pointer");
    }
    for (args, code, says) in [
        (
            vec!["release", "promote", "v1", "--env", "prod", "--percent", "10"],
            2,
            "already the stable tag",
        ),
        (
            vec!["release", "promote", "v9", "--env", "prod", "--percent", "10"],
            1,
            "v9",
        ),
        (
            vec!["release", "rollout", "set", "--env", "prod", "--percent", "20"],
            2,
            "no rollout",
        ),
        (
            vec!["release", "rollout", "halt", "--env", "prod"],
            2,
            "no rollout",
        ),
        (
            vec!["release", "rollout", "finish", "--env", "prod"],
            2,
            "no rollout",
        ),
    ] {
        let out = fleet.operator(&args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(
            out.assert_one_error_line().contains(says),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(fleet.pointer(), before, "{args:?} changed the pointer");
    }
}

#[test]
fn a_rollout_target_its_manifest_contradicts_is_refused_by_the_instance() {
    let fleet = Fleet::new(1);
    fleet.release("v1", true);
    fleet.release("v2", true);
    fleet.ok(&["release", "promote", "v1", "--env", "prod"]);
    assert_eq!(fleet.boot_all(), [0]);
    fleet.ok(&["release", "promote", "v2", "--env", "prod", "--percent", "100"]);
    // The rollout names a build that v2's manifest does not.
    let mut pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    pointer["rollout"]["sha256"] = Value::String("f".repeat(64));
    std::fs::write(
        fleet.host.path("store/pointers/prod.json"),
        serde_json::to_vec(&pointer).unwrap(),
    )
    .unwrap();
    let out = run(fleet.instance("i-00").arg("run"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fleet.current("i-00"), "v1", "stays on stable");
    let report = fleet.report("i-00");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("rollout target v2 refused, staying on v1"),
        "{warnings}"
    );
    assert!(warnings.contains("but its manifest says"), "{warnings}");
    assert_eq!(report["rollout"]["in"], true);
    // plan says so too.
    let out = run(fleet.instance("i-00").arg("plan"));
    assert!(out.stdout.contains("refused"), "{}", out.stdout);
}

#[test]
fn plan_shows_the_bucket_and_why() {
    let fleet = Fleet::new(1);
    fleet.release("v1", true);
    fleet.release("v2", true);
    fleet.ok(&["release", "promote", "v1", "--env", "prod"]);
    fleet.ok(&["release", "promote", "v2", "--env", "prod", "--percent", "100"]);
    let out = run(fleet.instance("i-00").args(["--json", "plan"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["tag"], "v2");
    assert_eq!(plan["rollout"]["bucket"], bucket("v2", "i-00"));
    assert_eq!(plan["rollout"]["in"], true);
    let out = run(fleet.instance("i-00").arg("plan"));
    assert!(
        out.stdout.contains(&format!(
            "rollout    v2 to 100% of instances; this one is in: bucket {} <",
            bucket("v2", "i-00")
        )),
        "{}",
        out.stdout
    );
    // release list and show name the rollout.
    let out = fleet.operator(&["release", "list"]);
    assert!(out.stdout.contains("prod (rollout 100%)"), "{}", out.stdout);
    let out = fleet.operator(&["release", "show", "v2"]);
    assert!(
        out.stdout.contains("rollout         prod (100% of instances now"),
        "{}",
        out.stdout
    );
}

#[test]
fn concurrent_sets_never_lose_an_update() {
    let host = Host::on_moto(CONFIG);
    host.push("v1", Some("true"), &[], true);
    host.push("v2", Some("true"), &[], false);
    let out = host.run(&["release", "promote", "v2", "--env", "prod", "--percent", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let serial = |host: &Host| -> u64 {
        let out = host.run(&["--json", "release", "rollout", "status", "--env", "prod"]);
        serde_json::from_str::<Value>(&out.stdout).unwrap()["serial"]
            .as_u64()
            .unwrap()
    };
    let before = serial(&host);
    let children: Vec<_> = (0..8)
        .map(|i| {
            host.command()
                .args([
                    "release",
                    "rollout",
                    "set",
                    "--env",
                    "prod",
                    "--percent",
                    &(10 + i).to_string(),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(serial(&host), before + 8, "every set landed exactly once");
}

/// Agents, killed when the test ends (or fails).
struct Agents(Vec<std::process::Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn watch_steps_through_healthy_reports_and_halts_on_a_failing_canary() {
    let config = format!("{CONFIG}[agent]\ninterval = \"200ms\"\njitter = \"0s\"\n");
    let fleet = Fleet::with_config(4, &config);
    fleet.on_v1(&[("v2", true), ("v3", false)]);
    let _agents = Agents(
        fleet
            .ids
            .iter()
            .map(|id| {
                fleet
                    .instance(id)
                    .arg("agent")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    // A salt that puts some, not all, of the four in at 50 %.
    let salt = (0..1000)
        .map(|i| format!("s{i}"))
        .find(|s| (1..=3).contains(&fleet.ids.iter().filter(|id| is_in(s, id, 50.0)).count()))
        .unwrap();

    fleet.ok(&[
        "release",
        "promote",
        "v2",
        "--env",
        "prod",
        "--percent",
        "0",
        "--salt",
        &salt,
    ]);
    let out = fleet.operator(&[
        "--json", "release", "rollout", "watch", "--env", "prod", "--steps", "50,100", "--bake", "3s",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["step", "baked", "step", "baked", "finished"],
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("step 1/2: 50%"), "{}", out.stderr);
    let pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    assert_eq!(pointer["tag"], "v2");
    assert!(fleet.running().iter().all(|t| t == "v2"));

    // v3 fails its health check: the canaries roll back, and watch halts at 50 %.
    fleet.ok(&[
        "release",
        "promote",
        "v3",
        "--env",
        "prod",
        "--percent",
        "0",
        "--salt",
        &salt,
    ]);
    let out = fleet.operator(&[
        "release", "rollout", "watch", "--env", "prod", "--steps", "50,100", "--bake", "3s",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("halted at 50%"), "{}", out.stderr);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
    let pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    assert_eq!(pointer["rollout"]["halted"], true);
    assert_eq!(pointer["rollout"]["percent"], 50.0);
    assert_eq!(pointer["tag"], "v2");
    assert!(
        fleet.running().iter().all(|t| t == "v2"),
        "the canaries went back to v2"
    );
}

#[test]
fn an_unreadable_rollout_is_set_aside_and_everyone_stays_on_stable() {
    let fleet = Fleet::new(1);
    fleet.on_v1(&[("v2", true)]);
    fleet.ok(&["release", "promote", "v2", "--env", "prod", "--percent", "100"]);
    let mut pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    pointer["rollout"]["percent"] = Value::String("lots".into());
    std::fs::write(
        fleet.host.path("store/pointers/prod.json"),
        serde_json::to_vec(&pointer).unwrap(),
    )
    .unwrap();
    let out = run(fleet.instance("i-00").arg("run"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fleet.current("i-00"), "v1");
    let warnings = fleet.report("i-00")["warnings"].to_string();
    assert!(
        warnings.contains("the pointer's rollout is ignored"),
        "{warnings}"
    );
    // The operator can still end it.
    fleet.ok(&["release", "promote", "v1", "--env", "prod"]);
    let pointer: Value = serde_json::from_slice(&fleet.pointer()).unwrap();
    assert!(pointer.get("rollout").is_none());
}

#[test]
fn a_running_agent_follows_a_timed_wave_without_a_pointer_change() {
    let config = format!("{CONFIG}[agent]\ninterval = \"200ms\"\njitter = \"0s\"\n");
    let fleet = Fleet::with_config(1, &config);
    fleet.on_v1(&[("v2", true)]);
    let log = fleet.host.path("agent.log");
    let _agent = Agents(vec![
        fleet
            .instance("i-00")
            .args(["-vv", "agent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ]);
    // Nobody for 3 s, then everyone: the pointer is written once.
    fleet.ok(&[
        "release",
        "promote",
        "v2",
        "--env",
        "prod",
        "--waves",
        "0@0s,100@3s",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(fleet.current("i-00"), "v1", "not before the wave");
    let moved = support::host::eventually(Duration::from_secs(10), || {
        fleet.current("i-00") == "v2" && fleet.report("i-00")["tag"] == "v2"
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(moved, "{logged}");
    assert!(
        logged.contains("unchanged"),
        "the pointer was not read again: {logged}"
    );
    assert_eq!(fleet.report("i-00")["rollout"]["percent"], 100.0);
}

#[test]
fn no_rollout_change_makes_instances_run_a_release_that_is_gone() {
    let fleet = Fleet::new(2);
    fleet.on_v1(&[("v2", true)]);
    fleet.ok(&["release", "promote", "v2", "--env", "prod", "--percent", "10"]);
    // v2's manifest disappears from the store.
    std::fs::remove_file(fleet.host.path("store/builds/v2.json")).unwrap();
    let before = fleet.pointer();
    for args in [
        &["release", "rollout", "finish", "--env", "prod"][..],
        &["release", "rollout", "set", "--env", "prod", "--percent", "50"],
    ] {
        let out = fleet.operator(args);
        assert_ne!(out.code, 0, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains("v2"), "{args:?}: {}", out.stderr);
        assert_eq!(fleet.pointer(), before, "{args:?} changed the pointer");
    }
    fleet.ok(&["release", "rollout", "halt", "--env", "prod"]);
    let halted = fleet.pointer();
    assert_ne!(
        fleet
            .operator(&["release", "rollout", "resume", "--env", "prod"])
            .code,
        0
    );
    assert_eq!(fleet.pointer(), halted);
    // Going back to stable, whose release is there, is still allowed.
    fleet.ok(&["release", "rollout", "abort", "--env", "prod"]);
}

#[test]
fn a_new_place_in_a_timed_rollout_is_reported_at_once() {
    let config = format!("{CONFIG}[agent]\ninterval = \"200ms\"\njitter = \"0s\"\n");
    let fleet = Fleet::with_config(1, &config);
    fleet.on_v1(&[("v2", true)]);
    let _agent = Agents(vec![
        fleet
            .instance("i-00")
            .arg("agent")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ]);
    // 0 %, then 0.01 % after 2 s: this instance's place (the percentage) moves while it
    // stays out and the pointer stays as it is.
    let salt = "s";
    assert!(!is_in(salt, "i-00", 0.01));
    fleet.ok(&[
        "release",
        "promote",
        "v2",
        "--env",
        "prod",
        "--salt",
        salt,
        "--waves",
        "0@0s,0.01@2s,100@1d",
    ]);
    let seen = |percent: f64| {
        support::host::eventually(Duration::from_secs(8), || {
            fleet.report("i-00")["rollout"]["percent"].as_f64() == Some(percent)
        })
    };
    assert!(seen(0.0), "{}", fleet.report("i-00"));
    assert!(
        seen(0.01),
        "the new place was not reported: {}",
        fleet.report("i-00")
    );
    assert_eq!(fleet.current("i-00"), "v1");
}
