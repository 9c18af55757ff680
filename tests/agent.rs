//! Black-box: `bootlace agent` (DESIGN §6.2) running as a process — updates, health
//! checks and rollback, the hold file, signals, crash recovery, store outages, the
//! conditional pointer read, and systemd's notify socket. `file://` where the store
//! does not matter; moto behind the fault proxy where it does.

mod support;

use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::host::{Host, eventually};
use support::imds::{self, Imds};
use support::proxy::{Fault, Proxy};
use support::{s3, write};

/// Every init script appends `<tag> <phase> <previous>` to `$LOG_DIR/init.log`.
const INIT: &str =
    "echo \"$BOOTLACE_TAG $BOOTLACE_PHASE ${BOOTLACE_PREVIOUS_TAG:--}\" >> \"$LOG_DIR/init.log\"";
const FAST: &str = "[agent]\ninterval = \"200ms\"\njitter = \"0s\"\n";

/// Pushes and promotes `tag` (with a `version` file, and a 64 KiB one that every
/// release shares, so that an update is worth a delta pack): its init logs and then
/// runs `extra`; `healthy` puts the file the health check looks for into it.
fn release(host: &Host, tag: &str, extra: &str, healthy: bool) {
    let shared: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut files: Vec<(&str, &[u8])> = vec![("version", tag.as_bytes()), ("shared.bin", &shared)];
    if healthy {
        files.push(("healthy", b"yes"));
    }
    host.push(tag, Some(&format!("{INIT}\n{extra}")), &files, true);
}

fn start_agent(host: &Host) -> Agent {
    spawn_agent(host, host.command())
}

/// What the agent logged.
fn log(host: &Host) -> String {
    std::fs::read_to_string(host.path("agent.log")).unwrap_or_default()
}

fn current(host: &Host) -> String {
    host.link("current").unwrap_or_default()
}

/// A running agent, killed if a test ends (or fails) without stopping it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Agent {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl From<Child> for Agent {
    fn from(child: Child) -> Self {
        Agent(child)
    }
}

/// SIGTERM, then the exit status.
fn stop(agent: impl Into<Agent>) -> std::process::ExitStatus {
    let mut agent = agent.into();
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    agent.0.wait().unwrap()
}

fn config_with_hold(extra: &str, dir: &std::path::Path) -> String {
    format!("{FAST}hold_file = \"{}\"\n{extra}", dir.join("hold").display())
}

#[test]
fn a_promote_reaches_a_running_agent_with_phase_update() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    release(&host, "v2", "", true);
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 2),
        "{}",
        log(&host)
    );
    assert_eq!(host.inits(), ["v1 boot -", "v2 update v1"]);
    assert!(eventually(Duration::from_secs(5), || host.report()["tag"] == "v2"));
    let report = host.report();
    assert_eq!(report["trigger"], "agent");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["previous_tag"], "v1");
    // v2 was pushed with a delta pack from v1, which this instance holds (DESIGN §6.9).
    assert_eq!(report["via"], "delta", "{report}");
    assert_eq!(current(&host), "releases/v2");
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn a_failing_health_check_is_rolled_back_and_not_retried_until_the_serial_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_hold(
        "[health]\ncommand = \"test -f healthy\"\ntries = 2\ninterval = \"50ms\"\n",
        dir.path(),
    );
    let host = Host::new(&config);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    release(&host, "v2", "", false);
    // The rollback to `good` needs no download: v1's archive is away from the store.
    let v1: Value =
        serde_json::from_slice(&std::fs::read(host.path("store/builds/v1.json")).unwrap()).unwrap();
    let archive = host.path(&format!("store/{}", v1["archive"].as_str().unwrap()));
    std::fs::rename(&archive, host.path("v1-archive")).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 3),
        "{}",
        log(&host)
    );
    assert_eq!(host.inits(), ["v1 boot -", "v2 update v1", "v1 rollback v1"]);
    assert!(eventually(Duration::from_secs(5), || host.report()["status"]
        == "rolled_back"));
    let report = host.report();
    assert_eq!(report["rolled_back_from"]["tag"], "v2");
    assert!(
        report["rolled_back_from"]["reason"]
            .as_str()
            .unwrap()
            .contains("health check failed")
    );
    assert_eq!(current(&host), "releases/v1");
    // Several checks later, v2 has not been tried again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(host.inits().len(), 3);
    assert_eq!(report["via"], "delta", "v2 arrived as a pack: {report}");
    std::fs::rename(host.path("v1-archive"), &archive).unwrap();
    // A new serial is an explicit retry.
    host.promote("v1");
    host.promote("v2");
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 5),
        "{}",
        log(&host)
    );
    assert_eq!(host.inits()[3], "v2 update v1");
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn the_hold_file_holds_the_switch_but_not_the_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(&config_with_hold("", dir.path()));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    std::fs::write(dir.path().join("hold"), "").unwrap();
    let agent = start_agent(&host);
    release(&host, "v2", "", true);
    assert!(eventually(Duration::from_secs(15), || host
        .path("state/releases/v2")
        .exists()));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(current(&host), "releases/v1", "held");
    assert_eq!(host.inits().len(), 1);
    let warnings = host.report()["warnings"].to_string();
    assert!(warnings.contains("held by"), "{warnings}");
    std::fs::remove_file(dir.path().join("hold")).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 2),
        "{}",
        log(&host)
    );
    assert_eq!(current(&host), "releases/v2");
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn sigterm_during_a_long_init_lets_it_finish_and_exits_0() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    release(
        &host,
        "v2",
        "touch \"$LOG_DIR/started\"; sleep 2; touch \"$LOG_DIR/finished\"",
        true,
    );
    assert!(eventually(Duration::from_secs(15), || host
        .path("log/started")
        .exists()));
    let started = Instant::now();
    let status = stop(agent);
    assert_eq!(status.code(), Some(0), "{}", log(&host));
    assert!(host.path("log/finished").exists(), "the init ran to its end");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(host.report()["status"], "ok");
    assert_eq!(host.report()["tag"], "v2");
}

/// v1 booted and good; v2 (healthy or not) deployed by hand and current, its init
/// never run, so never committed.
fn switched_to_v2_uncommitted(healthy: bool) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(&config_with_hold(
        "[health]\ncommand = \"test -f healthy\"\ntries = 1\n",
        dir.path(),
    ));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    release(&host, "v2", "", healthy);
    assert_eq!(host.run(&["deploy"]).code, 0);
    assert_eq!(current(&host), "releases/v2");
    (dir, host)
}

#[test]
fn an_uncommitted_switch_is_health_checked_first_and_rolled_back() {
    // v2 switched to and never committed: what a kill -9 between the two leaves.
    let (_dir, host) = switched_to_v2_uncommitted(false);
    // Its init was seen to finish (what a kill after init and before the commit
    // leaves): only the health check runs again.
    write(
        &host.path("state"),
        "init.json",
        r#"{"tag":"v2","group":null,"boot_id":"","finished":true}"#,
    );
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 4, "exits as status says: {}", out.stderr);
    assert!(out.stderr.contains("never committed"), "{}", out.stderr);
    assert_eq!(current(&host), "releases/v1");
    assert_eq!(host.report()["status"], "rolled_back");
    assert_eq!(host.run(&["status"]).code, 4);
    // Recorded under the pointer's serial: the check that followed left it alone.
    assert_eq!(host.inits(), ["v1 boot -", "v1 rollback v1"]);
    assert_ne!(host.link("previous").as_deref(), Some("releases/v2"));
}

#[test]
fn a_release_whose_init_never_finished_runs_it_again_before_it_is_committed() {
    // Switched to, and its init never ran: a healthy check alone must not commit it.
    let (_dir, host) = switched_to_v2_uncommitted(true);
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("not seen to finish"), "{}", out.stderr);
    assert_eq!(host.inits(), ["v1 boot -", "v2 update v1"]);
    assert_eq!(host.link("good").as_deref(), Some("releases/v2"));
}

#[test]
fn a_store_outage_backs_off_keeps_the_release_and_recovers() {
    let host = Host::on_moto(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // The first 4 pointer reads get 503 (each retried within store.deadline).
    let proxy = Proxy::start(&s3::moto().endpoint, "pointers/", Fault::Unavailable, 20);
    let mut command = host.command();
    command
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .env("BOOTLACE_CONFIG", host.path("config.toml"));
    write(
        host.dir.path(),
        "config.toml",
        format!("{FAST}[store]\ndeadline = \"300ms\"\n"),
    );
    let agent = command
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent::from(agent);
    assert!(
        eventually(Duration::from_secs(20), || log(&host).contains("trying again in")),
        "{}",
        log(&host)
    );
    assert_eq!(current(&host), "releases/v1");
    release(&host, "v2", "", true);
    assert!(
        eventually(Duration::from_secs(30), || host.inits().len() == 2),
        "{}",
        log(&host)
    );
    assert_eq!(current(&host), "releases/v2");
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn an_unchanged_pointer_costs_one_conditional_request_per_check() {
    let host = Host::on_moto(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let proxy = Proxy::start(&s3::moto().endpoint, "never-spoiled", Fault::Unavailable, 0);
    let agent = host
        .command()
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent::from(agent);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stop(agent).code(), Some(0));
    let (requests, not_modified) = (
        proxy.requests.load(Ordering::SeqCst),
        proxy.not_modified.load(Ordering::SeqCst),
    );
    // One full read at the first check; every later check is one request, a 304.
    assert!(not_modified >= 5, "{not_modified} of {requests}");
    assert_eq!(requests, not_modified + 1, "{not_modified} of {requests}");
}

#[test]
fn systemd_hears_ready_and_status() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let socket_path = host.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // systemd names the pid the watchdog is for: this one, through exec.
    let agent = support::with_env_of(&host.command(), "/bin/sh")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "20000000")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" agent"])
        .arg(env!("CARGO_BIN_EXE_bootlace"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent::from(agent);
    let mut heard = String::new();
    let mut buffer = [0u8; 4096];
    while !(heard.contains("READY=1") && heard.contains("STATUS=")) {
        let n = socket.recv(&mut buffer).expect("a datagram within 10 s");
        heard.push_str(&String::from_utf8_lossy(&buffer[..n]));
        heard.push('\n');
    }
    assert!(heard.contains("STATUS=prod → v1 (serial 1)"), "{heard}");
    assert!(heard.contains("next check in"), "{heard}");
    assert!(
        heard.find("READY=1") < heard.find("STATUS="),
        "READY=1 comes at start, not after the first check: {heard}"
    );
    // An update widens the watchdog to its bound: 89 min with the defaults, past the
    // 71.6 min a u32 of microseconds holds.
    release(&host, "v2", "", true);
    let widened = |heard: &str| {
        heard
            .lines()
            .filter_map(|l| l.strip_prefix("WATCHDOG_USEC="))
            .filter_map(|v| v.parse::<u64>().ok())
            .any(|usec| usec > u64::from(u32::MAX))
    };
    while !widened(&heard) {
        let n = socket.recv(&mut buffer).expect("a datagram within 10 s");
        heard.push_str(&String::from_utf8_lossy(&buffer[..n]));
        heard.push('\n');
    }
    assert!(heard.contains("WATCHDOG_USEC=5340000000"), "{heard}");
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn agent_once_with_nothing_to_do_exits_0() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    release(&host, "v2", "exit 1", true);
    let out = host.run(&["--json", "agent", "--once"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["status"], "rolled_back");
    assert_eq!(report["trigger"], "agent");
}

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let first = start_agent(&host);
    assert!(eventually(Duration::from_secs(10), || host
        .path("state/agent.lock")
        .exists()));
    std::thread::sleep(Duration::from_millis(300));
    let out = host.run(&["agent"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains(&format!(
            "another agent runs on this state dir (pid {}",
            first.id()
        )),
        "{line}"
    );
    assert_eq!(stop(first).code(), Some(0));
}

#[test]
fn a_pointer_deleted_while_the_agent_runs_leaves_the_release_running() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(host.path("store/pointers/prod.json")).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || log(&host).contains("no pointer")),
        "{}",
        log(&host)
    );
    assert_eq!(current(&host), "releases/v1");
    // It comes back: the agent follows again.
    release(&host, "v2", "", true);
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 2),
        "{}",
        log(&host)
    );
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn a_pointer_flipping_every_200ms_leaves_a_complete_release_current() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    release(&host, "v2", "", true);
    host.promote("v1");
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    for i in 0..10 {
        host.promote(if i % 2 == 0 { "v2" } else { "v1" });
        std::thread::sleep(Duration::from_millis(200));
    }
    // It settles on the last state: v1.
    assert!(
        eventually(Duration::from_secs(10), || current(&host) == "releases/v1"
            && host.report()["tag"] == "v1"),
        "{}",
        log(&host)
    );
    let version = std::fs::read_to_string(host.path("state/current/version")).unwrap();
    assert_eq!(version, "v1");
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn instance_role_credentials_are_refreshed_as_they_expire() {
    // Role credentials that expire 2 s after each is issued; no keys in the environment.
    let imds = Imds::start(imds::Options {
        role_credentials_ttl: Some(Duration::from_secs(2)),
        ..imds::Options::default()
    });
    let host = Host::on_moto(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = host
        .command()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let agent = Agent::from(agent);
    std::thread::sleep(Duration::from_secs(3));
    release(&host, "v2", "", true);
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 2),
        "{}",
        log(&host)
    );
    assert_eq!(stop(agent).code(), Some(0));
    let role = format!("/latest/meta-data/iam/security-credentials/{}", imds::ROLE);
    let fetched = imds
        .seen()
        .iter()
        .filter(|s| s.path == role && s.status == 200)
        .count();
    // At least one fresh set for each 2 s of the agent's life, over IMDSv2 tokens.
    assert!(fetched >= 3, "{fetched} credential fetches");
    assert!(imds.token_requests() >= 1);
}

#[test]
fn an_instance_role_token_no_header_can_carry_fails_the_s3_store_in_one_line() {
    // A compromised instance's metadata service: the role's token holds a newline.
    let imds = Imds::with_role_token("role-token\n\u{7f}");
    let host = Host::on_moto(FAST);
    release(&host, "v1", "", true);
    let out = support::run(
        host.command()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
            .arg("run"),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("instance role") && line.contains("not printable ASCII"),
        "{line}"
    );
    assert!(!out.all().contains("panicked"), "{}", out.all());
    assert!(host.inits().is_empty(), "init ran");
    let role = format!("/latest/meta-data/iam/security-credentials/{}", imds::ROLE);
    assert!(imds.seen().iter().any(|s| s.path == role && s.status == 200));
}

#[test]
fn a_session_token_in_the_environment_no_header_can_carry_is_bad_input_not_a_panic() {
    let host = Host::on_moto(FAST);
    release(&host, "v1", "", true);
    let out = support::run(host.command().env("AWS_SESSION_TOKEN", "token\nmore").arg("run"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("AWS_SESSION_TOKEN is not printable ASCII"),
        "{line}"
    );
    assert!(
        !out.all().contains("panicked") && !out.all().contains("more"),
        "{}",
        out.all()
    );
    assert!(host.inits().is_empty(), "init ran");
}

/// Starts the agent with `command` (a host's, maybe pointed elsewhere), logging to
/// `agent.log`.
fn spawn_agent(host: &Host, mut command: std::process::Command) -> Agent {
    let child = command
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    Agent(child)
}

#[test]
fn a_timed_wave_that_reaches_a_held_instance_is_applied_once_the_hold_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(&config_with_hold("", dir.path()));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    host.push("v2", Some(INIT), &[("version", b"v2")], false);
    std::fs::write(dir.path().join("hold"), "").unwrap();
    let agent = start_agent(&host);
    // Nobody yet, everyone after 2 s: the pointer does not change when this instance
    // comes in.
    let out = host.run(&[
        "release",
        "promote",
        "v2",
        "--env",
        "prod",
        "--waves",
        "0@0s,100@2s",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        eventually(Duration::from_secs(15), || log(&host).contains("held by")),
        "{}",
        log(&host)
    );
    assert_eq!(current(&host), "releases/v1");
    std::fs::remove_file(dir.path().join("hold")).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 2),
        "the assignment was never applied: {}",
        log(&host)
    );
    assert_eq!(current(&host), "releases/v2");
    assert_eq!(host.inits(), ["v1 boot -", "v2 update v1"]);
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn a_hold_file_made_during_the_download_stops_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    // The full download, so that the archive is what trickles.
    let host = Host::on_moto(&config_with_hold("[deploy]\ndelta = \"off\"\n", dir.path()));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // The archive trickles in over about 3 s.
    let proxy = Proxy::start(
        &s3::moto().endpoint,
        ".tar.zst",
        Fault::Trickle {
            bytes: 4096,
            every: Duration::from_millis(100),
        },
        1,
    );
    let mut command = host.command();
    command.env("AWS_ENDPOINT_URL", &proxy.endpoint);
    let agent = spawn_agent(&host, command);
    let noise: Vec<u8> = (0..120_000).map(|_| fastrand::u8(..)).collect();
    host.push("v2", Some(INIT), &[("version", b"v2"), ("noise", &noise)], true);
    assert!(
        eventually(Duration::from_secs(15), || proxy.spoiled.load(Ordering::SeqCst)
            > 0),
        "{}",
        log(&host)
    );
    std::fs::write(dir.path().join("hold"), "").unwrap();
    assert!(
        eventually(Duration::from_secs(20), || log(&host).contains("held by")),
        "{}",
        log(&host)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        current(&host),
        "releases/v1",
        "switched under a hold: {}",
        log(&host)
    );
    assert_eq!(host.inits(), ["v1 boot -"]);
    std::fs::remove_file(dir.path().join("hold")).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || current(&host) == "releases/v2"),
        "{}",
        log(&host)
    );
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn sigterm_during_start_up_recovery_stops_the_agent_after_it() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // v2 switched to, its init never run; v3 waiting behind it.
    host.push("v2", Some(&format!("{INIT}\nsleep 2")), &[], true);
    assert_eq!(host.run(&["deploy"]).code, 0);
    release(&host, "v3", "", true);
    let agent = start_agent(&host);
    assert!(
        eventually(Duration::from_secs(15), || host.inits().len() == 2),
        "{}",
        log(&host)
    );
    let started = Instant::now();
    assert_eq!(stop(agent).code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        log(&host).contains("SIGTERM: stopping once the step in progress ends"),
        "said at once: {}",
        log(&host)
    );
    assert_eq!(
        host.inits(),
        ["v1 boot -", "v2 update v1"],
        "an update ran after SIGTERM"
    );
}

#[test]
fn an_init_orphaned_by_a_killed_agent_is_ended_before_recovery() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    // v2's first init runs for long (and says its pid); a second one is quick.
    let body = format!(
        "{INIT}\nif [ ! -f \"$LOG_DIR/once\" ]; then touch \"$LOG_DIR/once\"; echo $$ > \"$LOG_DIR/pid\"; sleep 60; fi"
    );
    host.push("v2", Some(&body), &[], true);
    assert!(
        eventually(Duration::from_secs(15), || host.logged("pid")),
        "{}",
        log(&host)
    );
    let mut agent = agent;
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let pid: i32 = std::fs::read_to_string(host.path("log/pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the orphan runs on");
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("ended what was left of v2's init"),
        "{}",
        out.stderr
    );
    // SAFETY: as above.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the orphaned init still runs");
    assert_eq!(host.inits(), ["v1 boot -", "v2 update v1", "v2 update v1"]);
    assert_eq!(host.link("good").as_deref(), Some("releases/v2"));
    assert_eq!(host.report()["status"], "ok");
}

#[test]
fn a_release_a_boot_run_deployed_while_the_agent_waited_for_the_lock_is_not_started_again() {
    let host = Host::new(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    host.push("v2", Some(&format!("{INIT}\nsleep 2")), &[], true);
    let boot = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The boot run has switched and runs v2's init, holding the lock.
    assert!(eventually(Duration::from_secs(15), || host.inits().len() == 2));
    let out = host.run(&["agent", "--once"]);
    let mut boot = boot;
    assert!(boot.wait().unwrap().success());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(host.inits(), ["v1 boot -", "v2 boot v1"], "{}", out.stderr);
}

#[test]
fn agent_once_exits_as_run_would_after_a_rollback_and_for_a_failed_target() {
    let host = Host::new("[health]\ncommand = \"test -f healthy\"\ntries = 1\n");
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    release(&host, "v2", "", false);
    assert_eq!(host.run(&["agent", "--once"]).code, 4);
    // Not tried again: as `run` says of it, degraded.
    let once = host.run(&["agent", "--once"]);
    assert_eq!(once.code, 3, "{}", once.stderr);
    assert_eq!(host.run(&["run"]).code, 3);
    // A plain rollback does not switch back to the release that failed.
    let out = host.run(&["rollback"]);
    assert_ne!(current(&host), "releases/v2", "{}", out.stdout);
}

#[test]
fn heartbeats_refresh_the_report_and_keep_the_history() {
    let host = Host::new(&format!("{FAST}report_interval = \"100ms\"\n"));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let runs = || std::fs::read_dir(host.path("state/runs")).unwrap().count();
    let before = runs();
    let agent = start_agent(&host);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(), before, "heartbeats pushed runs into runs/");
    let checked = host.report()["checked_at"].clone();
    assert!(checked.is_string(), "{}", host.report());
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn a_live_agent_keeps_heartbeating_without_a_readable_pointer_or_last_report() {
    let host = Host::new(&format!("{FAST}report_interval = \"100ms\"\n"));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let agent = start_agent(&host);
    let stored = || -> Value {
        let key = host.path("store/reports/prod/web/i-test.json");
        serde_json::from_slice(&std::fs::read(key).unwrap_or_default()).unwrap_or(Value::Null)
    };
    let fresh_after = |what: &str| {
        let mark = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            eventually(Duration::from_secs(5), || stored()["checked_at"]
                .as_str()
                .is_some_and(|at| at > mark.as_str())),
            "no heartbeat {what}: {}",
            log(&host)
        );
    };
    let pointer = host.path("store/pointers/prod.json");
    let good = std::fs::read(&pointer).unwrap();
    std::fs::write(&pointer, b"{ not a pointer").unwrap();
    fresh_after("with a corrupt pointer");
    assert!(
        !log(&host).contains("trying again in"),
        "a corrupt pointer is no store outage: {}",
        log(&host)
    );
    std::fs::remove_file(&pointer).unwrap();
    fresh_after("with the pointer deleted");
    std::fs::write(&pointer, good).unwrap();
    std::fs::write(host.path("state/last-run.json"), b"garbage").unwrap();
    fresh_after("with last-run.json unreadable");
    assert!(
        log(&host).contains("the last report could not be read"),
        "{}",
        log(&host)
    );
    assert_eq!(stop(agent).code(), Some(0));
}

#[test]
fn a_corrupt_target_is_fetched_once_while_held() {
    let dir = tempfile::tempdir().unwrap();
    // The spoiled archive is what is fetched: no delta pack serves around it.
    let host = Host::new(&config_with_hold("[deploy]\ndelta = \"off\"\n", dir.path()));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    std::fs::write(dir.path().join("hold"), "").unwrap();
    release(&host, "v2", "", true);
    // Its archive spoiled in the store, same size.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(host.path("store/builds/v2.json")).unwrap()).unwrap();
    let blob = host.path(&format!("store/{}", manifest["archive"].as_str().unwrap()));
    let size = std::fs::metadata(&blob).unwrap().len() as usize;
    std::fs::write(&blob, vec![b'x'; size]).unwrap();
    let runs = || std::fs::read_dir(host.path("state/runs")).unwrap().count();
    let before = runs();
    let agent = start_agent(&host);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stop(agent).code(), Some(0));
    assert_eq!(
        runs(),
        before + 1,
        "one report, not one per check: {}",
        log(&host)
    );
    assert_eq!(log(&host).matches("INFO held by").count(), 1, "{}", log(&host));
    assert_eq!(host.report()["status"], "degraded");
    assert!(
        log(&host).contains("the target was not deployed), no init script ran;"),
        "an update that ran no init says so: {}",
        log(&host)
    );
}

#[test]
fn a_health_urls_credentials_and_query_reach_no_report_or_log() {
    let host = Host::new(
        "[health]\nurl = \"http://admin:pa55word@127.0.0.1:9/health?token=sekrit\"\ntries = 1\ntimeout = \"1s\"\n",
    );
    release(&host, "v1", "", true);
    let out = host.run(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let stored = std::fs::read_to_string(host.path("store/reports/prod/web/i-test.json")).unwrap();
    let local = std::fs::read_to_string(host.path("state/last-run.json")).unwrap();
    for text in [&out.stderr, &out.stdout, &stored, &local] {
        assert!(!text.contains("sekrit") && !text.contains("pa55word"), "{text}");
    }
    assert!(local.contains("127.0.0.1:9/health"), "{local}");
}

#[test]
fn harmful_agent_and_health_settings_are_refused() {
    for (config, key) in [
        ("[agent]\ninterval = \"0s\"\n", "agent.interval"),
        ("[health]\nurl = \"file:///etc/passwd\"\n", "health.url"),
        ("[health]\nurl = \"ftp://127.0.0.1/x\"\n", "health.url"),
    ] {
        let host = Host::new(config);
        let out = host.run(&["agent", "--once"]);
        assert_eq!(out.code, 2, "{config}: {}", out.stderr);
        assert!(out.stderr.contains(key), "{}", out.stderr);
    }
}

#[test]
fn a_first_boot_killed_during_init_is_recovered_by_the_agent() {
    let host = Host::new(FAST);
    let body = format!(
        "{INIT}\nif [ ! -f \"$LOG_DIR/once\" ]; then touch \"$LOG_DIR/once\"; echo $$ > \"$LOG_DIR/pid\"; sleep 60; fi"
    );
    host.push("v1", Some(&body), &[], true);
    let mut boot = host
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(15), || host.logged("pid")));
    boot.kill().unwrap();
    boot.wait().unwrap();
    let pid: i32 = std::fs::read_to_string(host.path("log/pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(host.link("good"), None, "nothing was committed yet");
    let out = host.run(&["agent", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // SAFETY: signal 0 only asks whether the process exists.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the orphaned init still runs");
    assert_eq!(host.inits(), ["v1 boot -", "v1 update -"]);
    assert_eq!(host.link("good").as_deref(), Some("releases/v1"));
}

#[test]
fn sigterm_while_waiting_for_the_lock_starts_nothing() {
    let host = Host::new(&format!("{FAST}[deploy]\nlock_timeout = \"20s\"\n"));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    let mut holder = std::process::Command::new("flock")
        .arg(host.path("state/lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1), from util-linux");
    let agent = start_agent(&host);
    release(&host, "v2", "", true);
    assert!(
        eventually(Duration::from_secs(15), || log(&host).contains("waiting up to")),
        "{}",
        log(&host)
    );
    // SAFETY: signalling a child we spawned.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(stop(agent).code(), Some(0));
    assert_eq!(current(&host), "releases/v1", "{}", log(&host));
    assert_eq!(host.inits(), ["v1 boot -"]);
}

#[test]
fn a_pointer_read_that_times_out_is_an_outage_not_a_refusal() {
    let host = Host::on_moto(FAST);
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // Every pointer read stalls after its headers.
    let proxy = Proxy::start(&s3::moto().endpoint, "pointers/", Fault::Stall { after: 0 }, 1000);
    write(
        host.dir.path(),
        "config.toml",
        format!("{FAST}[deploy]\ntimeout = \"1s\"\n[store]\nidle_timeout = \"10s\"\n"),
    );
    let mut command = host.command();
    command.env("AWS_ENDPOINT_URL", &proxy.endpoint);
    let agent = spawn_agent(&host, command);
    assert!(
        eventually(Duration::from_secs(20), || log(&host).contains("trying again in")),
        "{}",
        log(&host)
    );
    assert!(!log(&host).contains("target not deployed"), "{}", log(&host));
    assert_eq!(stop(agent).code(), Some(0));
}
