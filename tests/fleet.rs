//! `bootlace fleet` and `fleet prune` against synthetic fleets of reports in moto and
//! in `file://` stores, run as an operator runs them; the page rendered in Chromium.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::fleet::{Instance, pointer, rollout_pointer};
use support::proxy::{Fault, Proxy};
use support::{Outcome, bootlace, run, s3};

const HOURS: u64 = 3600;

/// A fleet store in moto: `BOOTLACE_STORE` and the endpoint set.
struct MotoFleet {
    place: String,
}

impl MotoFleet {
    fn new() -> Self {
        Self {
            place: s3::moto().place(),
        }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        s3::moto().put(&self.place, key, bytes);
    }

    fn add(&self, instances: &[Instance]) {
        for instance in instances {
            self.put(&instance.key(), instance.report());
        }
    }

    fn command(&self, endpoint: &str) -> Command {
        let mut command = bootlace();
        command
            .env("BOOTLACE_STORE", format!("s3://{}", self.place))
            .env("AWS_ENDPOINT_URL", endpoint);
        command
    }

    fn fleet(&self, args: &[&str]) -> Outcome {
        run(self.command(&s3::moto().endpoint).arg("fleet").args(args))
    }

    fn exists(&self, key: &str) -> bool {
        s3::moto().object(&self.place, key).is_some()
    }
}

/// The sample fleet: two environments, three roles, four tags, every status, two
/// stale instances, format 1 beside format 2.
fn sample() -> Vec<Instance> {
    let mut fleet = Vec::new();
    for i in 0..5 {
        fleet.push(Instance::new("prod", "web", &format!("i-web{i}"), "v2"));
    }
    fleet.push(Instance::new("prod", "web", "i-web5", "v1").status("failed"));
    fleet.push(Instance::new("prod", "web", "i-web6", "v1").status("rolled_back"));
    fleet.push(Instance::new("prod", "web", "i-web7", "v1").age(Duration::from_secs(3 * HOURS)));
    fleet.push(Instance::new("prod", "worker", "i-wrk0", "v2").status("degraded"));
    fleet.push(Instance::new("prod", "worker", "i-wrk1", "v2").format_1());
    fleet.push(Instance::new("staging", "web", "i-stg0", "v3"));
    fleet.push(Instance::new("staging", "web", "i-stg1", "v3").age(Duration::from_secs(30 * HOURS)));
    fleet
}

fn json(out: &Outcome) -> Value {
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr))
}

fn group<'a>(fleet: &'a Value, environment: &str, role: &str, tag: &str) -> &'a Value {
    fleet["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["environment"] == environment && g["role"] == role && g["tag"] == tag)
        .unwrap_or_else(|| panic!("no group {environment}/{role}/{tag} in {fleet:#}"))
}

#[test]
fn a_synthetic_fleet_is_counted_exactly() {
    let store = MotoFleet::new();
    store.add(&sample());
    store.put("pointers/prod.json", pointer("v2", 7));
    store.put("reports/prod/web/garbage.json", b"{not json".to_vec());
    // Stored as prod/web's, but says it is staging's: a copied or misplaced report.
    let misplaced = Instance::new("staging", "web", "i-moved", "v3");
    store.put("reports/prod/web/i-moved.json", misplaced.report());

    let out = store.fleet(&["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fleet = json(&out);
    let web_v2 = group(&fleet, "prod", "web", "v2");
    assert_eq!(web_v2["instances"], 5);
    assert_eq!(web_v2["by_status"]["ok"], 5);
    assert_eq!(web_v2["stale"], 0);
    assert_eq!(web_v2["stable"], true);
    let web_v1 = group(&fleet, "prod", "web", "v1");
    assert_eq!(web_v1["instances"], 3);
    assert_eq!(
        web_v1["by_status"],
        serde_json::json!({"ok": 1, "failed": 1, "degraded": 0, "rolled_back": 1})
    );
    assert_eq!(web_v1["stale"], 1);
    assert_eq!(web_v1["stable"], false);
    let worker = group(&fleet, "prod", "worker", "v2");
    assert_eq!(worker["instances"], 2);
    assert_eq!(worker["by_status"]["degraded"], 1);
    assert_eq!(worker["by_status"]["ok"], 1, "the format 1 report counts");
    let staging = group(&fleet, "staging", "web", "v3");
    assert_eq!(
        (staging["instances"].as_u64(), staging["stale"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(staging["stable"], false, "staging has no pointer");
    assert_eq!(fleet["groups"].as_array().unwrap().len(), 4);
    // Sorted by environment, role, then instances descending.
    let order: Vec<String> = fleet["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| format!("{}/{}/{}", g["environment"], g["role"], g["tag"]).replace('"', ""))
        .collect();
    assert_eq!(
        order,
        ["prod/web/v2", "prod/web/v1", "prod/worker/v2", "staging/web/v3"]
    );
    assert_eq!(
        fleet["instances"],
        serde_json::json!([]),
        "no rows without --instances"
    );
    assert_eq!(fleet["unreadable_count"], 2);
    let unreadable = fleet["unreadable"].to_string();
    assert!(
        unreadable.contains("reports/prod/web/garbage.json"),
        "{unreadable}"
    );
    assert!(unreadable.contains("its environment is staging"), "{unreadable}");
    assert!(fleet["generated_at"].as_str().unwrap().ends_with('Z'));

    // The same for people: aligned, marked, the unreadable named.
    let out = store.fleet(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("ENVIRONMENT  ROLE"), "{}", out.stdout);
    assert!(lines[1].contains("v2 (stable)"), "{}", out.stdout);
    assert!(out.stdout.contains("2 unreadable reports"), "{}", out.stdout);
    assert_eq!(
        lines[0].find("INSTANCES").map(|at| at + "INSTANCES".len()),
        lines[1].find(" 5 ").map(|at| at + 2),
        "counts right-aligned under their heading:\n{}",
        out.stdout
    );
}

#[test]
fn instances_and_scopes() {
    let store = MotoFleet::new();
    store.add(&sample());
    let out = store.fleet(&["--instances", "--env", "prod", "--role", "web", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fleet = json(&out);
    let instances = fleet["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 8);
    let ids: Vec<&str> = instances
        .iter()
        .map(|i| i["machine_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "i-web0", "sorted by machine id");
    let stale = instances.iter().find(|i| i["machine_id"] == "i-web7").unwrap();
    assert_eq!(stale["stale"], true);
    assert!(stale["age_s"].as_u64().unwrap() >= 3 * HOURS);
    assert_eq!(stale["init_script"], "b/prod/bootstrapper.sh");
    assert_eq!(stale["bootlace_version"], "0.1.0");
    assert_eq!(stale["context"], "b");

    // --role alone reads every environment's role.
    let fleet = json(&store.fleet(&["--json", "--role", "web"]));
    let environments: Vec<&str> = fleet["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["environment"].as_str().unwrap())
        .collect();
    assert_eq!(environments, ["prod", "prod", "staging"]);

    let out = store.fleet(&["--instances", "--env", "staging"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("MACHINE ID"), "{}", out.stdout);
    let row = out.stdout.lines().find(|l| l.starts_with("i-stg1")).unwrap();
    assert!(row.contains("ok, stale") && row.contains("30h"), "{row}");

    // A bad scope is bad input.
    let out = store.fleet(&["--env", "../prod"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    out.assert_one_error_line();
}

#[test]
fn check_fails_on_failed_rolled_back_or_stale_only() {
    let store = MotoFleet::new();
    store.add(&[
        Instance::new("prod", "web", "i-1", "v2"),
        Instance::new("prod", "web", "i-2", "v2").status("degraded"),
    ]);
    let out = store.fleet(&["--check"]);
    assert_eq!(out.code, 0, "degraded is not a failure: {}", out.stderr);
    for (instance, why) in [
        (
            Instance::new("prod", "web", "i-3", "v2").status("failed"),
            "1 failed",
        ),
        (
            Instance::new("prod", "web", "i-3", "v2").status("rolled_back"),
            "1 rolled back",
        ),
        (
            Instance::new("prod", "web", "i-3", "v2").age(Duration::from_secs(3 * HOURS)),
            "1 stale",
        ),
    ] {
        store.add(std::slice::from_ref(&instance));
        let out = store.fleet(&["--check"]);
        assert_eq!(out.code, 1, "{why}: {}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
        assert!(out.stdout.contains("ENVIRONMENT"), "the table still prints");
    }
    // A longer --stale makes the old report fresh again.
    assert_eq!(store.fleet(&["--check", "--stale", "4h"]).code, 0);
    assert_eq!(store.fleet(&["--check", "--stale", "1h", "--json"]).code, 1);
    // A report that cannot be read fails the gate too: it could hide anything.
    store.put("reports/prod/web/i-4.json", b"<html>403</html>".to_vec());
    let out = store.fleet(&["--check", "--stale", "4h"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("1 unreadable"), "{}", out.stderr);
}

#[test]
fn the_age_is_the_later_of_the_last_check_and_the_last_run() {
    let store = MotoFleet::new();
    store.add(&[
        // Ran 5 h ago, has checked the pointer since: alive.
        Instance::new("prod", "web", "i-agent", "v2").ran(Duration::from_secs(5 * HOURS)),
        // Format 1 has no checks: its last run is its last word.
        Instance::new("prod", "web", "i-old", "v2")
            .format_1()
            .age(Duration::from_secs(5 * HOURS)),
    ]);
    let fleet = json(&store.fleet(&["--json", "--instances"]));
    let stale: Vec<(&str, bool)> = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["machine_id"].as_str().unwrap(), i["stale"].as_bool().unwrap()))
        .collect();
    assert_eq!(stale, [("i-agent", false), ("i-old", true)]);
    assert_eq!(fleet["instances"][1]["format_version"], 1);
}

#[test]
fn a_rollout_in_the_pointer_marks_its_target() {
    let store = MotoFleet::new();
    store.add(&[
        Instance::new("prod", "web", "i-1", "v2"),
        Instance::new("prod", "web", "i-2", "v2"),
        Instance::new("prod", "web", "i-3", "v3"),
    ]);
    store.put("pointers/prod.json", rollout_pointer("v2", "v3", 4));
    let out = store.fleet(&["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fleet = json(&out);
    let (stable, target) = (
        group(&fleet, "prod", "web", "v2"),
        group(&fleet, "prod", "web", "v3"),
    );
    assert_eq!(
        (stable["stable"].as_bool(), stable["target"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(
        (target["stable"].as_bool(), target["target"].as_bool()),
        (Some(false), Some(true))
    );
    let marks = &fleet["pointers"]["prod"];
    assert_eq!(marks["target"], "v3");
    assert_eq!(
        marks["percent"], 25.0,
        "the second wave is due, the third is not: {marks}"
    );
    let out = store.fleet(&[]);
    assert!(out.stdout.contains("v3 (target)"), "{}", out.stdout);
}

#[test]
fn report_text_cannot_reach_the_terminal_or_the_page_as_markup() {
    let store = MotoFleet::new();
    let hostile = "<img src=x onerror=alert(1)>\u{1b}[31mred\nline";
    store.add(&[Instance::new("prod", "web", "i-1", "v2").text(hostile)]);
    store.put(
        "reports/prod/web/i-2.json",
        String::from_utf8(Instance::new("prod", "web", "i-2", "v2").report())
            .unwrap()
            .replace("\"v2\"", "\"v2 <u>\"")
            .into_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fleet.html");
    let out = store.fleet(&["--instances", "--html", page.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains('\u{1b}'),
        "an escape code reached the terminal"
    );
    let row = out.stdout.lines().find(|l| l.starts_with("i-1")).unwrap();
    assert!(row.contains("<img src=x onerror=alert(1)> [31mred line"), "{row}");
    assert!(
        out.stdout
            .contains("reports/prod/web/i-2.json: tag \"v2 <u>\" must match"),
        "{}",
        out.stdout
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<img") && !html.contains("<u>"),
        "report text became markup"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

#[test]
fn prune_deletes_only_stale_reports_and_never_outside_reports() {
    let store = MotoFleet::new();
    store.add(&sample());
    store.put("pointers/prod.json", pointer("v2", 1));
    store.put("builds/v2.json", b"{}".to_vec());
    store.put("reports/notes.txt", b"not a report".to_vec());
    store.put(
        "reports/prod/web/broken.json",
        b"garbage, written just now".to_vec(),
    );

    let out =
        run(store
            .command(&s3::moto().endpoint)
            .args(["fleet", "prune", "--older-than", "2h", "--dry-run"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("would delete reports/prod/web/i-web7.json"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("would delete reports/staging/web/i-stg1.json"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("would delete 2 reports; kept 11"),
        "{}",
        out.stdout
    );
    assert!(
        store.exists("reports/prod/web/i-web7.json"),
        "a dry run deletes nothing"
    );

    let out =
        run(store
            .command(&s3::moto().endpoint)
            .args(["--json", "fleet", "prune", "--older-than", "2h"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pruned = json(&out);
    assert_eq!(pruned["deleted"].as_array().unwrap().len(), 2);
    assert!(!store.exists("reports/prod/web/i-web7.json"));
    assert!(!store.exists("reports/staging/web/i-stg1.json"));
    for kept in [
        "reports/prod/web/i-web0.json",
        "reports/prod/web/broken.json",
        "reports/notes.txt",
        "pointers/prod.json",
        "builds/v2.json",
    ] {
        assert!(store.exists(kept), "{kept} kept");
    }
    assert_eq!(json(&store.fleet(&["--json"]))["groups"][0]["stale"], 0);

    // In one environment's scope only.
    store.add(&[
        Instance::new("prod", "web", "i-gone", "v1").age(Duration::from_secs(9 * HOURS)),
        Instance::new("staging", "web", "i-gone", "v1").age(Duration::from_secs(9 * HOURS)),
    ]);
    let out = run(store.command(&s3::moto().endpoint).args([
        "fleet",
        "prune",
        "--older-than",
        "8h",
        "--env",
        "staging",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("deleted 1 report;"), "{}", out.stdout);
    assert!(!store.exists("reports/staging/web/i-gone.json"));
    assert!(store.exists("reports/prod/web/i-gone.json"));
}

#[test]
fn empty_stores_are_empty_fleets() {
    let store = MotoFleet::new();
    let out = store.fleet(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("no reports in s3://"), "{}", out.stdout);
    // A store with releases but no reports/ folder.
    store.put("pointers/prod.json", pointer("v2", 1));
    let out = store.fleet(&["--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json(&out)["groups"], serde_json::json!([]));
    let dir = tempfile::tempdir().unwrap();
    let out = run(bootlace()
        .env("BOOTLACE_STORE", format!("file://{}", dir.path().display()))
        .args(["fleet"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("no reports in file://"), "{}", out.stdout);
}

#[test]
fn check_fails_when_no_instance_matched() {
    let dir = tempfile::tempdir().unwrap();
    support::fleet::write_to_dir(dir.path(), &[Instance::new("prod", "web", "i-1", "v2")]);
    let fleet = |args: &[&str]| {
        run(bootlace()
            .env("BOOTLACE_STORE", format!("file://{}", dir.path().display()))
            .arg("fleet")
            .args(args))
    };
    assert_eq!(fleet(&["--check"]).code, 0);
    // A typo in --env matches nothing: no pass.
    let out = fleet(&["--check", "--env", "prdo"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("check failed: no instance reports in"),
        "{}",
        out.stderr
    );
    std::fs::remove_dir_all(dir.path().join("reports")).unwrap();
    assert_eq!(fleet(&["--check"]).code, 1, "an empty fleet is no pass");
}

#[test]
fn prune_refuses_an_age_below_the_report_interval() {
    let dir = tempfile::tempdir().unwrap();
    support::fleet::write_to_dir(dir.path(), &[Instance::new("prod", "web", "i-1", "v2")]);
    let prune = |args: &[&str]| {
        run(bootlace()
            .env("BOOTLACE_STORE", format!("file://{}", dir.path().display()))
            .args(["fleet", "prune"])
            .args(args))
    };
    let out = prune(&["--older-than", "0s"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("below agent.report_interval (1h)"),
        "{}",
        out.stderr
    );
    assert!(dir.path().join("reports/prod/web/i-1.json").exists());
    // A dry run shows what it would do; --force does it.
    assert_eq!(prune(&["--older-than", "0s", "--dry-run"]).code, 0);
    assert!(dir.path().join("reports/prod/web/i-1.json").exists());
    let out = prune(&["--older-than", "0s", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!dir.path().join("reports/prod/web/i-1.json").exists());
}

#[test]
fn prune_never_lists_or_deletes_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (name, body) in [("builds/v1.json", "{}"), ("pointers/prod.json", "{}")] {
        std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
        std::fs::write(root.join(name), body).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(30 * 86400);
        std::fs::File::options()
            .write(true)
            .open(root.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    std::fs::create_dir_all(root.join("reports/evil")).unwrap();
    std::os::unix::fs::symlink("../../builds", root.join("reports/evil/web")).unwrap();
    std::os::unix::fs::symlink("../pointers", root.join("reports/prod")).unwrap();
    let command = || {
        let mut command = bootlace();
        command.env("BOOTLACE_STORE", format!("file://{}", root.display()));
        command
    };
    let out = run(command().args(["--json", "fleet", "prune", "--older-than", "1d"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json(&out)["deleted"], serde_json::json!([]), "{}", out.stdout);
    assert!(
        root.join("builds/v1.json").exists(),
        "a manifest was deleted through a link"
    );
    assert!(
        root.join("pointers/prod.json").exists(),
        "a pointer was deleted through a link"
    );
    let out = run(command().args(["--json", "fleet"]));
    assert_eq!(
        json(&out)["unreadable_count"],
        0,
        "a link was followed: {}",
        out.stdout
    );
}

#[test]
fn odd_keys_and_report_text_reach_no_terminal_raw_and_stop_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    support::fleet::write_to_dir(root, &[Instance::new("prod", "web", "i-1", "v2")]);
    // A key with a terminal escape in it, and a body whose fields disagree with its
    // key, in words that would repaint the table.
    std::fs::write(root.join("reports/prod/web/i-\u{1b}[2J.json"), "{}").unwrap();
    let forged = String::from_utf8(Instance::new("prod", "web", "i-2", "v2").report())
        .unwrap()
        .replace("\"i-2\"", "\"\\u001b[2J\\u001b[H0 failed\"");
    std::fs::write(root.join("reports/prod/web/i-2.json"), forged).unwrap();
    let fleet = |args: &[&str]| {
        run(bootlace()
            .env("BOOTLACE_STORE", format!("file://{}", root.display()))
            .args(args))
    };
    for args in [
        &["fleet"][..],
        &["fleet", "--instances"],
        &["fleet", "prune", "--older-than", "2h", "--dry-run"],
        &["release", "rollout", "status", "--env", "prod"],
    ] {
        let out = fleet(args);
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
            "{args:?} printed an escape: {out:?}"
        );
        assert!(
            !out.stderr.contains("panicked") && out.code != 101,
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = fleet(&["--json", "fleet"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = json(&out);
    assert_eq!(read["groups"][0]["instances"], 1);
    assert_eq!(read["unreadable_count"], 2, "{}", out.stdout);
    let out = fleet(&["fleet", "--check"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("2 unreadable"), "{}", out.stderr);
}

#[test]
fn a_50_mb_report_is_named_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    support::fleet::write_to_dir(dir.path(), &[Instance::new("prod", "web", "i-1", "v2")]);
    let huge = dir.path().join("reports/prod/web/i-huge.json");
    std::fs::File::create(&huge).unwrap().set_len(50 << 20).unwrap();
    let mut command = bootlace();
    command.env("BOOTLACE_STORE", format!("file://{}", dir.path().display()));
    let (out, rss) = support::with_peak_rss(&command, &["--json", "fleet"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fleet = json(&out);
    assert_eq!(fleet["groups"][0]["instances"], 1);
    assert_eq!(fleet["unreadable_count"], 1);
    let reason = fleet["unreadable"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("52428800 bytes, over the 1048576-byte limit"),
        "{reason}"
    );
    assert!(rss < 40 << 10, "peak RSS {rss} KiB: the report was read");
}

#[test]
fn a_flaky_store_is_retried_and_what_stays_unreadable_is_counted() {
    let store = MotoFleet::new();
    let fleet: Vec<Instance> = (0..100)
        .map(|i| Instance::new("prod", "web", &format!("i-{i:03}"), "v2"))
        .collect();
    store.add(&fleet);
    // Three report reads answered 503 once each: retried, all counted.
    let proxy = Proxy::start(&s3::moto().endpoint, "/reports/", Fault::Unavailable, 3);
    let out = run(store.command(&proxy.endpoint).args(["--json", "fleet"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counted = json(&out);
    assert_eq!(counted["groups"][0]["instances"], 100, "{}", out.stderr);
    assert_eq!(counted["unreadable_count"], 0);
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 3);

    // One report that always answers 503: retried until store.deadline, then named.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[store]\ndeadline = \"2s\"\n").unwrap();
    let proxy = Proxy::start(
        &s3::moto().endpoint,
        "/i-042.json",
        Fault::Unavailable,
        usize::MAX,
    );
    let started = std::time::Instant::now();
    let out = run(store
        .command(&proxy.endpoint)
        .env("BOOTLACE_CONFIG", config.path())
        .args(["--json", "fleet"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counted = json(&out);
    assert_eq!(counted["groups"][0]["instances"], 99);
    assert_eq!(counted["unreadable_count"], 1);
    assert_eq!(counted["unreadable"][0]["key"], "reports/prod/web/i-042.json");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_page_renders_in_chromium() {
    let store = MotoFleet::new();
    store.add(&sample());
    store.put("pointers/prod.json", rollout_pointer("v2", "v1", 7));
    store.put("reports/prod/web/garbage.json", b"{not json".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("fleet.html");
    let out = store.fleet(&["--html", page.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["http://", "https://", "src=\"", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the page must be self-contained: {external}"
        );
    }

    let dom = chromium(dir.path(), &page, "", &["--dump-dom"]);
    for text in [
        "i-web7",
        "i-stg1",
        "worker",
        "v2 \u{2605}",
        "v1 \u{2192}",
        "rollout of <b>v1</b>: 25% asked",
        "rolled back 1",
        "garbage.json",
        "12 of 12",
    ] {
        assert!(dom.contains(text), "{text} not in the rendered page");
    }
    // Filtered and sorted by the script, from the address's fragment.
    let dom = chromium(dir.path(), &page, "#status=failed", &["--dump-dom"]);
    assert!(dom.contains("1 of 12"), "the status filter");
    assert_eq!(visible_rows(&dom), ["i-web5"]);
    let dom = chromium(dir.path(), &page, "#q=staging", &["--dump-dom"]);
    assert_eq!(visible_rows(&dom), ["i-stg0", "i-stg1"]);
    // An address whose column is not one (typed, or linked by anyone) is ignored: the
    // filter still applies.
    let dom = chromium(dir.path(), &page, "#sort=1.5&status=failed", &["--dump-dom"]);
    assert_eq!(
        visible_rows(&dom),
        ["i-web5"],
        "a non-integer #sort= broke the page"
    );
    let dom = chromium(dir.path(), &page, "#sort=6&desc", &["--dump-dom"]);
    assert_eq!(
        visible_rows(&dom)[..2],
        ["i-stg1", "i-web7"],
        "sorted by age, oldest first"
    );
    let shot = dir.path().join("fleet.png");
    chromium(
        dir.path(),
        &page,
        "",
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400",
        ],
    );
    let (width, height, colours) = png_colours(&shot);
    assert_eq!((width, height), (1280, 1400));
    assert!(colours > 50, "only {colours} colours: the page is blank");
    if let Ok(keep) = std::env::var("BOOTLACE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// The machine ids of the instance table's rows that are shown, in order.
fn visible_rows(dom: &str) -> Vec<&str> {
    dom.split("<tr data-status=")
        .skip(1)
        .filter(|row| !row[..row.find('>').unwrap()].contains("display: none"))
        .map(|row| {
            let cell = &row[row.find("<td>").unwrap() + 4..];
            &cell[..cell.find("</td>").unwrap()]
        })
        .collect()
}

/// Runs headless Chromium on `page` (DESIGN §7's flags) with `fragment` after its
/// address, returning its stdout.
fn chromium(dir: &Path, page: &Path, fragment: &str, args: &[&str]) -> String {
    let program = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .expect("Chromium is needed for this test: apt-get install chromium (scripts/test.sh does)");
    let profile = tempfile::tempdir_in(dir).unwrap();
    let output = Command::new(program)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A PNG's size and how many distinct colours it has.
fn png_colours(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let step = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = pixels[..info.buffer_size()].chunks(step).collect();
    (info.width, info.height, colours.len())
}

#[test]
fn a_report_speaks_only_for_the_key_it_is_stored_at() {
    let dir = tempfile::tempdir().unwrap();
    support::fleet::write_to_dir(dir.path(), &[Instance::new("prod", "web", "i-1", "v2")]);
    // i-1's report copied over i-2's key (or i-2's body forged): unreadable, not i-2's.
    let forged = std::fs::read(dir.path().join("reports/prod/web/i-1.json")).unwrap();
    std::fs::create_dir_all(dir.path().join("reports/prod/db")).unwrap();
    std::fs::write(dir.path().join("reports/prod/web/i-2.json"), &forged).unwrap();
    std::fs::write(dir.path().join("reports/prod/db/i-1.json"), &forged).unwrap();
    let fleet = |args: &[&str]| {
        run(bootlace()
            .env("BOOTLACE_STORE", format!("file://{}", dir.path().display()))
            .arg("fleet")
            .args(args))
    };
    let out = fleet(&["--json"]);
    let read = json(&out);
    assert_eq!(read["groups"].as_array().unwrap().len(), 1, "{}", out.stdout);
    assert_eq!(read["groups"][0]["instances"], 1);
    assert_eq!(read["unreadable_count"], 2);
    let reasons: Vec<&str> = read["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("its machine_id is i-1, but it is stored as i-2's")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("its role is web, but it is stored as db's")),
        "{reasons:?}"
    );
    assert_eq!(fleet(&["--check"]).code, 1);
}

/// `[report] instance_tag`: an upload carries the object tag `bootlace-instance` with
/// its machine id, the tag the IAM policy of docs/fleet.md ties to the writer and the
/// key to; a store that keeps no tags refuses the upload with a line saying why, and a
/// config naming such a store is refused.
#[test]
fn reports_carry_the_instance_tag_the_iam_policy_matches() {
    use support::host::{Host, MACHINE_ID};
    let tagged = "[report]\ninstance_tag = true\n";
    let host = Host::on_moto(tagged);
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let place = host.place().unwrap();
    let key = format!("reports/prod/web/{MACHINE_ID}.json");
    assert!(s3::moto().object(place, &key).is_some(), "{}", out.stderr);
    assert_eq!(
        s3::moto().tags(place, &key),
        [("bootlace-instance".to_owned(), MACHINE_ID.to_owned())]
    );
    // The agent's uploads too; AWS_DISABLE_TAGGING cannot drop the tag.
    s3::moto().put(place, &key, b"{}".to_vec());
    assert!(s3::moto().tags(place, &key).is_empty());
    host.set_env("AWS_DISABLE_TAGGING", "true");
    host.push("v2", Some("true"), &[], true);
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_ne!(s3::moto().object(place, &key).unwrap(), b"{}", "{}", out.stderr);
    assert_eq!(
        s3::moto().tags(place, &key),
        [("bootlace-instance".to_owned(), MACHINE_ID.to_owned())]
    );
    // Without it, no tag: the policy for untagged reports (docs/image.md) still works.
    let plain = Host::on_moto("");
    plain.push("v1", Some("true"), &[], true);
    assert_eq!(plain.run(&["run"]).code, 0);
    assert!(s3::moto().tags(plain.place().unwrap(), &key).is_empty());

    let local = Host::new(tagged);
    local.push("v1", Some("true"), &[], true);
    let out = local.run(&["run"]);
    assert_eq!(
        out.code, 0,
        "a report that cannot be uploaded fails no run: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("object tag bootlace-instance needs an s3:// store"),
        "{}",
        out.stderr
    );
    assert!(!local.path("store").join(&key).exists());
    local.configure(&format!("[store]\nurl = \"file:///tmp/x\"\n{tagged}"));
    let out = local.run(&["plan"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("report.instance_tag"), "{}", out.stderr);
}
