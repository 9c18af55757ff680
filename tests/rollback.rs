//! Black-box: health checks and automatic rollback in `bootlace run` (DESIGN §6.2), on
//! a `file://` store with a file identity.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use serde_json::Value;
use support::host::Host;

/// Every init script appends `<tag> <phase> <previous tag>` to `$LOG_DIR/init.log`.
const INIT: &str =
    "echo \"$BOOTLACE_TAG $BOOTLACE_PHASE ${BOOTLACE_PREVIOUS_TAG:--}\" >> \"$LOG_DIR/init.log\"";

/// Pushes and promotes `tag`: its init logs and then runs `extra`; `healthy` puts the
/// file the health command looks for into the release.
fn release(host: &Host, tag: &str, extra: &str, healthy: bool) {
    let files: &[(&str, &[u8])] = if healthy { &[("healthy", b"yes")] } else { &[] };
    host.push(tag, Some(&format!("{INIT}\n{extra}")), files, true);
}

const HEALTH_FILE: &str = "[health]\ncommand = \"test -f healthy\"\ntries = 2\ninterval = \"100ms\"\n";

#[test]
fn a_failing_health_check_rolls_back_to_good_and_is_not_retried_until_the_pointer_changes() {
    let host = Host::new(HEALTH_FILE);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    assert_eq!(host.link("good").as_deref(), Some("releases/v1"));
    release(&host, "v2", "", false);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("run rolled back: v1 again (from v2)"),
        "{}",
        out.stdout
    );
    let report = host.report();
    assert_eq!(report["status"], "rolled_back");
    assert_eq!(report["tag"], "v1");
    assert_eq!(report["previous_tag"], "v1");
    assert_eq!(report["rolled_back_from"]["tag"], "v2");
    let reason = report["rolled_back_from"]["reason"].as_str().unwrap();
    assert!(reason.contains("health check failed 2 times"), "{reason}");
    assert_eq!(report["health"]["ok"], true, "v1's health, checked again");
    assert_eq!(host.link("current").as_deref(), Some("releases/v1"));
    assert_eq!(host.link("good").as_deref(), Some("releases/v1"));
    // v1 at boot, v2 at boot, v1 again to roll back.
    assert_eq!(host.inits(), ["v1 boot -", "v2 boot v1", "v1 rollback v1"]);
    let failed: Value =
        serde_json::from_slice(&std::fs::read(host.path("state/failed.json")).unwrap()).unwrap();
    assert_eq!(failed["tag"], "v2");
    assert_eq!(host.run(&["status"]).code, 4);

    // The same pointer state: v2 is not tried again; v1 runs, degraded.
    let out = host.run(&["run"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        host.report()["error"]
            .as_str()
            .unwrap()
            .contains("not tried again")
    );
    assert_eq!(host.inits().len(), 4);
    assert_eq!(host.inits()[3], "v1 boot v1");

    // A new pointer serial is an explicit retry.
    host.promote("v1");
    host.promote("v2");
    assert_eq!(host.run(&["run"]).code, 4);
    assert_eq!(host.inits()[4], "v2 boot v1");
}

#[test]
fn a_failing_init_rolls_back_too() {
    let host = Host::new("");
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    release(&host, "v2", "exit 3", true);
    let out = host.run(&["--json", "run"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["status"], "rolled_back");
    assert!(
        report["rolled_back_from"]["reason"]
            .as_str()
            .unwrap()
            .contains("exited with 3")
    );
    assert_eq!(report["health"], Value::Null, "no health check configured");
    assert_eq!(host.link("current").as_deref(), Some("releases/v1"));
}

#[test]
fn a_first_boot_with_a_failing_release_fails_with_nothing_to_roll_back_to() {
    let host = Host::new(HEALTH_FILE);
    release(&host, "v1", "", false);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(host.report()["status"], "failed");
    assert!(!host.path("state/good").exists());
    assert_eq!(host.link("current").as_deref(), Some("releases/v1"));
}

#[test]
fn rollback_can_be_turned_off() {
    let host = Host::new(&format!("{HEALTH_FILE}rollback = false\n"));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    release(&host, "v2", "", false);
    assert_eq!(host.run(&["run"]).code, 1);
    assert_eq!(host.link("current").as_deref(), Some("releases/v2"));
    assert_eq!(host.link("good").as_deref(), Some("releases/v1"));
}

#[test]
fn a_missing_health_command_is_unhealthy() {
    let host = Host::new("[health]\ncommand = \"/nonexistent/check\"\ntries = 1\n");
    release(&host, "v1", "", true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let tail = host.report()["health"]["output_tail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tail.contains("exited with 127"), "{tail}");
}

#[test]
fn a_health_check_that_prints_100_mb_keeps_the_last_64_kib() {
    let host = Host::new(
        "[health]\ncommand = \"head -c 100000000 /dev/zero | tr '\\\\0' x; echo END\"\ntries = 1\n",
    );
    release(&host, "v1", "", true);
    let status = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let tail = host.report()["health"]["output_tail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tail.len() <= 64 << 10 && tail.len() > 60 << 10, "{}", tail.len());
    assert!(tail.ends_with("END\n"));
}

#[test]
fn an_unreachable_health_url_is_unhealthy() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = Host::new(&format!(
        "[health]\nurl = \"http://127.0.0.1:{port}/health\"\ntries = 2\ninterval = \"50ms\"\ntimeout = \"1s\"\n"
    ));
    release(&host, "v1", "", true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let health = host.report()["health"].clone();
    assert_eq!(health["ok"], false);
    assert_eq!(health["tries"], 2);
    assert!(
        health["output_tail"]
            .as_str()
            .unwrap()
            .contains(&format!("GET http://127.0.0.1:{port}/health")),
        "{health}"
    );
}

#[test]
fn a_good_link_to_a_pruned_release_is_nothing_to_roll_back_to() {
    let host = Host::new(HEALTH_FILE);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // Damage: the release `good` names is gone.
    std::fs::remove_dir_all(host.path("state/releases/v1")).unwrap();
    release(&host, "v2", "", false);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.assert_one_error_line().contains("health check failed"),
        "{}",
        out.stderr
    );
    assert_eq!(host.link("current").as_deref(), Some("releases/v2"));
}

#[test]
fn a_health_url_is_healthy_on_2xx_only() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Answers 503 to the next `failing` requests, 200 after.
    let failing = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = failing.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let down = counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let status = if down { "503 Service Unavailable" } else { "200 OK" };
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            );
        }
    });
    let host = Host::new(&format!(
        "[health]\nurl = \"http://127.0.0.1:{port}/health\"\ntries = 2\ninterval = \"50ms\"\n"
    ));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    assert_eq!(host.report()["health"]["ok"], true);
    // v2's two tries get 503; v1's, after the rollback, 200.
    failing.store(2, Ordering::SeqCst);
    release(&host, "v2", "", true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let report = host.report();
    assert!(
        report["rolled_back_from"]["reason"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{report}"
    );
    assert_eq!(report["health"]["ok"], true);
}
