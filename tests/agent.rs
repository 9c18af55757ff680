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

/// Pushes and promotes `tag` (with a `version` file): its init logs and then runs
/// `extra`; `healthy` puts the file the health check looks for into it.
fn release(host: &Host, tag: &str, extra: &str, healthy: bool) {
    let mut files: Vec<(&str, &[u8])> = vec![("version", tag.as_bytes())];
    if healthy {
        files.push(("healthy", b"yes"));
    }
    host.push(tag, Some(&format!("{INIT}\n{extra}")), &files, true);
}

fn start_agent(host: &Host) -> Agent {
    let child = host
        .command()
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(host.path("agent.log")).unwrap())
        .spawn()
        .unwrap();
    Agent(child)
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

#[test]
fn an_uncommitted_switch_is_health_checked_first_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(&config_with_hold(
        "[health]\ncommand = \"test -f healthy\"\ntries = 1\n",
        dir.path(),
    ));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // v2 switched to and never committed: what a kill -9 between the two leaves.
    release(&host, "v2", "", false);
    assert_eq!(host.run(&["deploy"]).code, 0);
    assert_eq!(current(&host), "releases/v2");
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
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new(&config_with_hold(
        "[health]\ncommand = \"test -f healthy\"\ntries = 1\n",
        dir.path(),
    ));
    release(&host, "v1", "", true);
    assert_eq!(host.run(&["run"]).code, 0);
    // Switched to, and its init never ran: a healthy check alone must not commit it.
    release(&host, "v2", "", true);
    assert_eq!(host.run(&["deploy"]).code, 0);
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
    let agent = host
        .command()
        .env("NOTIFY_SOCKET", &socket_path)
        .arg("agent")
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
