//! Black-box regression tests for the faults a hostile tester found (issue 10), one
//! per finding, named after what each guards. A `file://` store and a file identity
//! keep them fast; the network faults are in `faults.rs`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::archives::{self, raw_tar, sha256_hex};
use support::host::{Host, eventually};
use support::{bootlace, run, write};
use tar::EntryType::Regular;

/// Pushes `tag` (with `app/version`) and points prod at it; its init runs `script`.
fn release(host: &Host, tag: &str, script: Option<&str>) {
    host.push(tag, script, &[("app/version", tag.as_bytes())], true);
}

/// Writes pointer `prod` by hand, naming `tag` with `sha256`.
fn plant_pointer(host: &Host, tag: &str, sha256: &str) {
    let pointer = json!({"format_version": 1, "tag": tag, "sha256": sha256, "size": 1, "serial": 99,
        "updated_at": "2026-11-25T00:00:00Z", "updated_by": "test", "history": []});
    std::fs::write(host.path("store/pointers/prod.json"), pointer.to_string()).unwrap();
}

// 1. Sizes from outside are capped, never trusted for allocation.

#[test]
fn a_pointer_of_5_gb_is_refused_unread_and_the_boot_degrades() {
    let host = Host::new("");
    release(&host, "v1", Some("touch \"$LOG_DIR/ran\""));
    assert_eq!(host.run(&["run"]).code, 0);
    std::fs::remove_file(host.path("log/ran")).unwrap();
    // A sparse 5 GB pointer: reading it whole would take 5 GB of memory.
    let pointer = std::fs::File::options()
        .write(true)
        .open(host.path("store/pointers/prod.json"))
        .unwrap();
    pointer.set_len(5 << 30).unwrap();
    let started = Instant::now();
    let (out, rss_kib) = support::with_peak_rss(&host.command(), &["run"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(host.logged("ran"), "the current release's init ran");
    let error = host.report()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("over the 65536-byte limit"), "{error}");
    assert!(rss_kib < 64 << 10, "peak RSS {rss_kib} KiB");
}

// 2. Housekeeping never stops init.

#[test]
fn a_stray_file_in_releases_does_not_stop_the_boot() {
    let host = Host::new("[deploy]\nkeep = 0\n");
    release(&host, "v1", Some("touch \"$LOG_DIR/v1\""));
    assert_eq!(host.run(&["run"]).code, 0);
    write(&host.path("state/releases"), "stray", "not a release");
    std::fs::create_dir(host.path("state/releases/empty")).unwrap();
    release(&host, "v2", Some("touch \"$LOG_DIR/v2\""));
    assert_eq!(host.run(&["run"]).code, 0);
    release(&host, "v3", Some("touch \"$LOG_DIR/v3\""));
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(host.logged("v3"));
    assert!(
        out.stderr
            .contains("2 entries that are not complete releases: empty, stray"),
        "{}",
        out.stderr
    );
    // Pruning went on around them: v1 is gone, v2 kept as previous.
    assert!(!host.path("state/releases/v1").exists());
    assert!(host.path("state/releases/v2").exists());
    assert!(host.path("state/releases/stray").is_file());
}

// 3. Daemons started by init keep running and logging after bootlace exits.

#[test]
fn a_daemon_started_by_init_outlives_bootlace_and_keeps_logging() {
    let host = Host::new("");
    let script = r#"echo "init says hello"
( for i in 1 2 3 4 5 6 7 8 9 10; do echo "daemon line $i"; echo "daemon err $i" >&2; sleep 1; done
  touch "$LOG_DIR/daemon-done" ) &
"#;
    release(&host, "v1", Some(script));
    let stdout = std::fs::File::create(host.path("stdout")).unwrap();
    let started = Instant::now();
    let status = host
        .command()
        .arg("run")
        .stdout(stdout)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let bootlace_took = started.elapsed();
    assert!(bootlace_took < Duration::from_secs(5), "{bootlace_took:?}");
    assert!(
        eventually(Duration::from_secs(20), || host.logged("daemon-done")),
        "the daemon died (SIGPIPE?) before its tenth line"
    );
    // The daemon's last lines were written ~9 s after bootlace exited, and still
    // reached bootlace's stdout (the journal, under systemd).
    let output = std::fs::read_to_string(host.path("stdout")).unwrap();
    assert!(output.contains("daemon line 10"), "{output}");
    let tail = host.report()["init"]["output_tail"].as_str().unwrap().to_owned();
    assert!(tail.contains("init says hello"), "{tail}");
}

// 4. The lock is never waited for silently or forever.

#[test]
fn a_held_lock_names_its_holder_and_is_given_up_after_lock_timeout() {
    let host = Host::new("[deploy]\nlock_timeout = \"1s\"\n");
    release(&host, "v1", Some("touch \"$LOG_DIR/started\"; sleep 4"));
    let mut first = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || host.logged("started")));
    let started = Instant::now();
    let out = host.run(&["deploy"]);
    let waited = started.elapsed();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(line.contains(&format!("held by pid {}", first.id())), "{line}");
    assert!(line.contains("gave up after 1s"), "{line}");
    assert!(out.stderr.contains("waiting up to 1s"), "{}", out.stderr);
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(first.wait().unwrap().success());
}

// 5. Names read from the store are checked before any use.

#[test]
fn a_pointer_naming_a_staging_dir_or_a_bad_tag_is_refused() {
    let host = Host::new("");
    release(&host, "v1", Some("touch \"$LOG_DIR/ran\""));
    assert_eq!(host.run(&["run"]).code, 0);
    for tag in [".staging-evil", "v 1", "../v1"] {
        plant_pointer(&host, tag, &"a".repeat(64));
        let out = host.run(&["run"]);
        assert_eq!(out.code, 3, "{tag}: {}", out.stderr);
        let error = host.report()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("must match"), "{error}");
        assert_eq!(host.link("current").as_deref(), Some("releases/v1"));
    }
    // A bad digest, or a manifest whose archive is not at its content address.
    plant_pointer(&host, "v1", "not-a-digest");
    assert_eq!(host.run(&["run"]).code, 3);
    assert!(
        host.report()["error"]
            .as_str()
            .unwrap()
            .contains("64 lowercase hex")
    );
}

// 7. The state dir is absolute, or refused.

#[test]
fn a_relative_state_dir_gives_init_absolute_paths() {
    let host = Host::new("");
    release(
        &host,
        "v1",
        Some("echo \"$BOOTLACE_RELEASE_DIR\" > \"$LOG_DIR/dir\"; test -d \"$BOOTLACE_RELEASE_DIR\""),
    );
    let out = run(host
        .command()
        .env_remove("BOOTLACE_STATE_DIR")
        .current_dir(host.dir.path())
        .args(["--state-dir", "./st", "run"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dir = std::fs::read_to_string(host.path("log/dir")).unwrap();
    assert!(Path::new(dir.trim()).is_absolute(), "{dir}");
    assert!(dir.trim().starts_with(host.dir.path().to_str().unwrap()), "{dir}");
}

#[test]
fn an_empty_state_dir_is_refused() {
    let host = Host::new("[deploy]\nstate_dir = \"\"\n");
    let out = run(host.command().env_remove("BOOTLACE_STATE_DIR").arg("run"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.assert_one_error_line().contains("state dir is empty"));
}

// 8. SIGTERM during init is passed on, and the run still reports.

#[test]
fn sigterm_during_init_is_passed_to_the_script_and_reported() {
    let host = Host::new("");
    release(
        &host,
        "v1",
        Some("trap 'touch \"$LOG_DIR/got-term\"; exit 7' TERM\ntouch \"$LOG_DIR/started\"\nsleep 30 & wait"),
    );
    let mut child = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || host.logged("started")));
    let started = Instant::now();
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(1),
        "bootlace exits with a report, not by the signal"
    );
    assert!(host.logged("got-term"), "the script got SIGTERM");
    let report = host.report();
    assert_eq!(report["status"], "failed");
    assert!(report["error"].as_str().unwrap().contains("SIGTERM"), "{report}");
    assert_eq!(report["init"]["exit_code"], 7);
}

// 9. Any failure to deploy the target degrades a run with a current release.

#[test]
fn any_deploy_failure_with_a_current_release_degrades() {
    let host = Host::new("");
    release(&host, "v1", Some("touch \"$LOG_DIR/v1\""));
    assert_eq!(host.run(&["run"]).code, 0);
    // A missing archive.
    release(&host, "v2", Some("true"));
    for blob in std::fs::read_dir(host.path("store/blobs/sha256")).unwrap() {
        std::fs::remove_file(blob.unwrap().path()).unwrap();
    }
    std::fs::remove_file(host.path("log/v1")).unwrap();
    let out = host.run(&["run"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(host.logged("v1"));
    assert_eq!(host.report()["tag"], "v1");
    // An empty store (no pointer at all), as a missing bucket is.
    std::fs::remove_file(host.path("log/v1")).unwrap();
    let empty = host.path("empty-store");
    std::fs::create_dir(&empty).unwrap();
    let out = run(host
        .command()
        .env("BOOTLACE_STORE", format!("file://{}", empty.display()))
        .arg("run"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(host.logged("v1"));
    assert!(host.report()["error"].as_str().unwrap().contains("no pointer"));
}

// 10. No init script is loud, and can be made a failure.

#[test]
fn no_init_script_is_a_warning_naming_the_candidates_or_a_failure_when_required() {
    let host = Host::new("");
    release(&host, "v1", None);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("WARN"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("b/prod/i-test.sh, b/prod/bootstrapper.sh, b/bootstrapper.sh")
    );
    let warnings = host.report()["warnings"].clone();
    assert!(
        warnings[0].as_str().unwrap().contains("b/bootstrapper.sh"),
        "{warnings}"
    );
    write(host.dir.path(), "config.toml", "[init]\nrequired = true\n");
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.assert_one_error_line().contains("init.required"));
}

// 11. Damage in the state dir is never trusted.

#[test]
fn an_empty_or_symlinked_release_dir_is_not_taken_as_a_release() {
    let host = Host::new("");
    release(&host, "v1", Some("touch \"$LOG_DIR/v1\""));
    // An empty directory and a symlink where v1 would be unpacked.
    std::fs::create_dir_all(host.path("state/releases/v1")).unwrap();
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(host.report()["deployed"], true, "the empty dir was replaced");
    assert!(host.logged("v1"));
    release(&host, "v2", Some("touch \"$LOG_DIR/v2\""));
    std::os::unix::fs::symlink(host.path("state/releases/v1"), host.path("state/releases/v2")).unwrap();
    assert_eq!(host.run(&["run"]).code, 0);
    assert_eq!(host.report()["deployed"], true);
    assert!(host.path("state/releases/v2").is_dir());
    assert!(!host.path("state/releases/v2").is_symlink());
    // `current` naming an unmarked release is no release: with the store gone, the
    // boot fails instead of running it.
    std::fs::remove_file(host.path("state/marks/v2.json")).unwrap();
    std::fs::remove_file(host.path("log/v2")).unwrap();
    let out = run(host
        .command()
        .env(
            "BOOTLACE_STORE",
            format!("file://{}", host.path("nowhere").display()),
        )
        .arg("run"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!host.logged("v2"), "init ran against an unmarked release");
}

// 12. Absurd durations are refused when the config is read.

#[test]
fn an_absurd_duration_is_refused_at_parse_time() {
    let host = Host::new("[init]\ntimeout = \"18446744073709551615s\"\n");
    let out = host.run(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("init.timeout") && line.contains("one-year maximum"),
        "{line}"
    );
}

// 13. A manifest that understates its size is stopped at the lie.

#[test]
fn a_release_larger_than_its_manifest_says_is_stopped_at_the_lie() {
    let host = Host::new("");
    release(&host, "v1", Some("true"));
    assert_eq!(host.run(&["run"]).code, 0);
    let archive = archives::zstd(&raw_tar(&[("big", Regular, &vec![0u8; 1 << 20])]));
    let sha = sha256_hex(&archive);
    let key = format!("blobs/sha256/{sha}.tar.zst");
    std::fs::write(host.path("store").join(&key), &archive).unwrap();
    let manifest = json!({"format_version": 1, "tag": "v2", "archive": key, "compression": "zstd",
        "sha256": sha, "size": archive.len(), "files": 1, "unpacked_bytes": 1000,
        "created_at": "2026-11-25T00:00:00Z", "created_by": "test", "source_revision": null});
    std::fs::write(host.path("store/builds/v2.json"), manifest.to_string()).unwrap();
    let out = host.run(&["deploy", "--tag", "v2"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.assert_one_error_line()
            .contains("more than 1000 bytes unpacked")
    );
    assert_eq!(host.link("current").as_deref(), Some("releases/v1"));
    let left: Vec<_> = std::fs::read_dir(host.path("state/releases")).unwrap().collect();
    assert_eq!(left.len(), 1, "no staging dir is left behind");
}

// 14. An interrupted push leaves no temporary archive.

#[test]
fn an_interrupted_push_removes_its_temporary_archive() {
    let host = Host::new("");
    let tree = host.path("big-tree");
    std::fs::create_dir(&tree).unwrap();
    let mut rng = fastrand::Rng::with_seed(14);
    for i in 0..24 {
        let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(8 << 20).collect();
        std::fs::write(tree.join(format!("f{i}")), data).unwrap();
    }
    let tmp = host.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let child = host
            .command()
            .env("TMPDIR", &tmp)
            .args(["release", "push", tree.to_str().unwrap(), "--tag", "big"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let packaging = || std::fs::read_dir(&tmp).unwrap().count() > 0;
        assert!(eventually(Duration::from_secs(20), packaging));
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(child.id() as i32, signal) };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

// 15. One corrupt manifest does not hide the others.

#[test]
fn release_list_names_a_corrupt_manifest_and_lists_the_rest() {
    let host = Host::new("");
    release(&host, "v1", None);
    release(&host, "v2", None);
    std::fs::write(host.path("store/builds/v1.json"), "{not json").unwrap();
    // And one over the 1 MiB a manifest may have: refused unread, the store still fine.
    std::fs::write(host.path("store/builds/v3.json"), vec![b' '; 2 << 20]).unwrap();
    let out = host.run(&["release", "list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("v2"), "{}", out.stdout);
    assert!(!out.stdout.contains("v1 "), "{}", out.stdout);
    assert!(out.stderr.contains("skipping v1"), "{}", out.stderr);
    assert!(out.stderr.contains("skipping v3"), "{}", out.stderr);
    let out = host.run(&["--json", "release", "list"]);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(listed["unreadable"]["v1"].is_string(), "{listed}");
}

// 16. A user-data file that is not a regular file is refused at once.

#[test]
fn a_fifo_as_user_data_is_refused_at_once() {
    let host = Host::new("");
    let fifo = host.path("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let started = Instant::now();
    let out = run(host
        .command()
        .env("BOOTLACE_IDENTITY", format!("file:{}", fifo.display()))
        .arg("identity"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.assert_one_error_line()
            .contains("not a regular file (a FIFO)")
    );
}

// 17. Messages say what happened.

#[test]
fn a_failed_run_says_so_without_pretending_a_release() {
    let host = Host::new("");
    std::fs::create_dir_all(host.path("store")).unwrap();
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("run failed: no release, no init script ran"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("already present"), "{}", out.stdout);
}

#[test]
fn a_manifest_for_another_tag_is_named_as_such() {
    let host = Host::new("");
    release(&host, "v1", None);
    let manifest = std::fs::read_to_string(host.path("store/builds/v1.json")).unwrap();
    std::fs::write(host.path("store/builds/v2.json"), manifest).unwrap();
    let out = host.run(&["release", "show", "v2"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(line.contains("it names tag \"v1\", not \"v2\""), "{line}");
}

#[test]
fn a_config_read_error_names_the_os_error_once() {
    let out = run(bootlace().args(["--config", "/nonexistent/bootlace.toml", "identity"]));
    assert_eq!(out.code, 2);
    let line = out.assert_one_error_line();
    assert_eq!(line.matches("No such file or directory").count(), 1, "{line}");
}

#[test]
fn status_exits_as_a_run_that_ended_with_bad_input() {
    let host = Host::new("");
    release(&host, "v1", None);
    write(host.dir.path(), "user-data", "environment=prod\nrole=web\n");
    let out = host.run(&["run"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(host.run(&["status"]).code, 2);
}

#[test]
fn a_non_executable_script_runs_by_its_shebang() {
    let host = Host::new("");
    let tree = host.path("tree");
    std::fs::create_dir_all(tree.join("bootstrap/b")).unwrap();
    // Bash-only syntax: under sh this fails.
    std::fs::write(
        tree.join("bootstrap/b/bootstrapper.sh"),
        "#!/bin/bash\nif [[ -n \"$BASH_VERSION\" ]]; then touch \"$LOG_DIR/bash\"; fi\n",
    )
    .unwrap();
    std::fs::set_permissions(
        tree.join("bootstrap/b/bootstrapper.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let tree = tree.to_str().unwrap();
    assert_eq!(
        host.run(&["release", "push", tree, "--tag", "v1", "--env", "prod"])
            .code,
        0
    );
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(host.logged("bash"));
}

// Second pass (issue 24): signals during health checks, and lines that say what
// happened.

/// Pushes v1 (healthy) and boots it, then pushes v2 (no `healthy` file) and starts
/// `run` on it, returning the run once v2's init has run.
fn boot_into_unhealthy_v2(host: &Host) -> std::process::Child {
    host.push("v1", Some("true"), &[("healthy", b"yes")], true);
    assert_eq!(host.run(&["run"]).code, 0);
    host.push("v2", Some("touch \"$LOG_DIR/v2-init\""), &[], true);
    let child = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || host.logged("v2-init")));
    child
}

#[test]
fn sigterm_during_a_health_check_ends_the_checks_and_leaves_the_release_uncommitted() {
    for (health, when) in [
        (
            "command = \"test -f healthy || sleep 20\"\ntries = 3\n",
            "during a try",
        ),
        (
            "command = \"test -f healthy\"\ntries = 3\ninterval = \"20s\"\n",
            "between tries",
        ),
    ] {
        let host = Host::new(&format!("[health]\n{health}"));
        let child = boot_into_unhealthy_v2(&host);
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        // SAFETY: signalling a child we spawned.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{when}: the checks went on"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{when}: a report, not death by signal"
        );
        let report = host.report();
        assert_eq!(report["status"], "failed", "{when}: {report}");
        assert_eq!(report["health"]["stopped_by"], "SIGTERM", "{when}: {report}");
        assert!(
            report["error"].as_str().unwrap().contains("stays uncommitted"),
            "{report}"
        );
        // Neither committed nor rolled back: recovery decides.
        assert_eq!(host.link("current").as_deref(), Some("releases/v2"), "{when}");
        assert_eq!(host.link("good").as_deref(), Some("releases/v1"), "{when}");
    }
}

#[test]
fn a_health_command_timeout_is_named_as_one() {
    let host = Host::new("[health]\ncommand = \"sleep 5\"\ntries = 1\ntimeout = \"200ms\"\n");
    host.push("v1", Some("true"), &[], true);
    let out = host.run(&["run"]);
    assert!(out.stderr.contains("health command timed out"), "{}", out.stderr);
    assert!(!out.stderr.contains("init script timed out"), "{}", out.stderr);
}

#[test]
fn a_corrupt_failed_record_is_said_not_ignored() {
    let host = Host::new("[health]\ncommand = \"test -f healthy\"\ntries = 1\n");
    host.push("v1", Some("true"), &[("healthy", b"yes")], true);
    assert_eq!(host.run(&["run"]).code, 0);
    host.push("v2", Some("true"), &[], true);
    assert_eq!(host.run(&["run"]).code, 4);
    std::fs::write(host.path("state/failed.json"), b"{ torn").unwrap();
    let out = host.run(&["run"]);
    assert!(
        out.stderr.contains("ignoring") && out.stderr.contains("failed.json"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_release_tree_is_the_pushed_tree_and_may_ship_any_name() {
    let host = Host::new("");
    // The application ships a file of bootlace's old mark name: it is its own.
    host.push(
        "v1",
        Some("true"),
        &[(".bootlace-release.json", b"{\"app\": true}"), ("app/a", b"a")],
        true,
    );
    assert_eq!(host.run(&["run"]).code, 0);
    let release = host.path("state/releases/v1");
    let mut names: Vec<String> = std::fs::read_dir(&release)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".bootlace-release.json", "app", "bootstrap"]);
    assert_eq!(
        std::fs::read(release.join(".bootlace-release.json")).unwrap(),
        b"{\"app\": true}"
    );
    assert!(host.path("state/marks/v1.json").is_file());
}

#[test]
fn a_state_dir_of_an_older_bootlace_keeps_its_releases() {
    let host = Host::new("");
    release(&host, "v1", Some("touch \"$LOG_DIR/v1\""));
    assert_eq!(host.run(&["run"]).code, 0);
    // As an older bootlace left it: the mark inside the release, no marks/.
    let mark = std::fs::read(host.path("state/marks/v1.json")).unwrap();
    std::fs::remove_dir_all(host.path("state/marks")).unwrap();
    std::fs::write(host.path("state/releases/v1/.bootlace-release.json"), mark).unwrap();
    std::fs::remove_file(host.path("log/v1")).unwrap();
    // With the store gone, v1 is still a release: the boot degrades and runs it.
    let out = run(host
        .command()
        .env(
            "BOOTLACE_STORE",
            format!("file://{}", host.path("nowhere").display()),
        )
        .arg("run"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(host.logged("v1"));
    assert!(host.path("state/marks/v1.json").is_file());
}

#[test]
fn the_lock_holder_named_is_the_process_that_holds_it() {
    let host = Host::new("[deploy]\nlock_timeout = \"200ms\"\n");
    release(&host, "v1", Some("true"));
    assert_eq!(host.run(&["run"]).code, 0);
    // An old bootlace's pid in the file, and the lock taken by hand.
    std::fs::write(host.path("state/lock"), "999999\n").unwrap();
    let mut holder = Command::new("flock")
        .arg(host.path("state/lock"))
        .args(["sleep", "5"])
        .spawn()
        .expect("flock(1), from util-linux");
    assert!(eventually(Duration::from_secs(5), || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .contains(&format!(" {} ", holder.id()))
    }));
    let out = host.run(&["deploy"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains(&format!("held by pid {} (flock)", holder.id())),
        "{line}"
    );
    assert!(!line.contains("999999"), "{line}");
}

#[test]
fn nothing_is_written_through_a_link_in_a_file_store() {
    let host = Host::new("");
    release(&host, "v1", Some("true"));
    let outside = host.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(host.path("store/reports")).unwrap();
    std::os::unix::fs::symlink(&outside, host.path("store/reports/prod")).unwrap();
    let out = host.run(&["run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("never written through a link"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a report was written outside the store"
    );
}

#[test]
fn commands_racing_to_open_an_older_state_dir_both_open_it() {
    let host = Host::new("");
    release(&host, "v1", Some("true"));
    assert_eq!(host.run(&["run"]).code, 0);
    let mark = std::fs::read(host.path("state/marks/v1.json")).unwrap();
    for _ in 0..6 {
        let _ = std::fs::remove_dir_all(host.path("state/marks"));
        std::fs::write(host.path("state/releases/v1/.bootlace-release.json"), &mark).unwrap();
        let runs: Vec<_> = (0..3)
            .map(|_| {
                host.command()
                    .arg("run")
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for run in runs {
            let out = run.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(host.path("state/marks/v1.json").is_file());
        let strays = std::fs::read_dir(host.path("state"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".marks.")
            })
            .count();
        assert_eq!(strays, 0, "a temporary marks dir was left");
    }
}

#[test]
fn sigterm_cuts_a_health_urls_try_short() {
    // A server that accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for stream in listener.incoming().flatten() {
            kept.push(stream);
        }
    });
    let host = Host::new(&format!(
        "[health]\nurl = \"http://127.0.0.1:{port}/health\"\ntimeout = \"30s\"\ntries = 1\n"
    ));
    release(&host, "v1", Some("touch \"$LOG_DIR/v1-init\""));
    let child = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || host.logged("v1-init")));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the GET ran to its timeout"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(host.report()["health"]["stopped_by"], "SIGTERM");
}
