//! Fault injection: `bootlace run` through a proxy (`support::proxy`) that spoils the
//! answers of a real S3 server (moto) — resets, stalls, trickles, truncation, a lying
//! `Content-Length`, 503 storms. Each run either succeeds (retried, resumed) or ends
//! degraded (exit 3) with the current release intact and its init run, within the
//! bound the config sets: `store.deadline` for retries, `store.idle_timeout` for
//! silence, `deploy.timeout` for the whole download.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::host::Host;
use support::proxy::{Fault, Proxy};
use support::{Outcome, run, s3};

/// Delta packs are off: these runs exercise the full download, the path every update
/// falls back to (the pack's own faults are at the end).
const CONFIG: &str =
    "[store]\ndeadline = \"2s\"\nidle_timeout = \"1s\"\n[deploy]\ndownload = \"stream\"\ndelta = \"off\"\n";
/// The keys of archives: not their file indexes, fetched alongside.
const ARCHIVES: &str = ".tar.zst";
/// v2's payload: random, so the archive is as large.
const PAYLOAD: usize = 3 << 20;

/// An instance on v1, with v2 promoted in moto and not yet deployed.
struct Faulted {
    host: Host,
}

impl Faulted {
    fn new(config: &str) -> Self {
        let host = Host::on_moto(config);
        let faulted = Self { host };
        faulted.push("v1", 10);
        assert_eq!(faulted.host.run(&["run"]).code, 0);
        faulted.push("v2", PAYLOAD);
        let log = faulted.host.path("log");
        std::fs::remove_dir_all(&log).unwrap();
        std::fs::create_dir(&log).unwrap();
        faulted
    }

    fn path(&self, name: &str) -> PathBuf {
        self.host.path(name)
    }

    /// Pushes and promotes `tag`: `payload` random bytes, and an init that logs.
    fn push(&self, tag: &str, payload: usize) {
        let mut rng = fastrand::Rng::with_seed(payload as u64);
        let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(payload).collect();
        let script = format!("touch \"$LOG_DIR/{tag}\"");
        self.host.push(tag, Some(&script), &[("payload", &data)], true);
    }

    /// Runs through a proxy spoiling `matching` answers with `fault`, `times` times;
    /// returns the outcome, how long it took and the report.
    fn run_through(&self, matching: &str, fault: Fault, times: usize) -> (Outcome, Duration, Value, Proxy) {
        let proxy = Proxy::start(&s3::moto().endpoint, matching, fault, times);
        let started = Instant::now();
        let out = run(self
            .host
            .command()
            .env("AWS_ENDPOINT_URL", &proxy.endpoint)
            .arg("run"));
        let took = started.elapsed();
        let report =
            serde_json::from_slice(&std::fs::read(self.path("state/last-run.json")).unwrap()).unwrap();
        (out, took, report, proxy)
    }

    fn ran(&self, tag: &str) -> bool {
        self.host.logged(tag)
    }

    /// A successful run deployed v2 and ran its init.
    fn assert_updated(&self, out: &Outcome, report: &Value) {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(report["tag"], "v2");
        assert!(self.ran("v2"));
        let payload = std::fs::read(self.path("state/current/payload")).unwrap();
        assert_eq!(payload.len(), PAYLOAD);
    }

    /// A degraded run kept v1 current, ran its init, and said why.
    fn assert_degraded(&self, out: &Outcome, report: &Value, why: &str) {
        assert_eq!(out.code, 3, "{}", out.stderr);
        assert_eq!(report["status"], "degraded");
        assert_eq!(report["tag"], "v1");
        assert!(self.ran("v1") && !self.ran("v2"));
        let error = report["error"].as_str().unwrap();
        assert!(error.contains(why), "{error}");
        let target = std::fs::read_link(self.path("state/current")).unwrap();
        assert_eq!(target, PathBuf::from("releases/v1"));
        let left: Vec<String> = std::fs::read_dir(self.path("state/releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".staging-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Retries stop at `store.deadline` (2 s); a try that has not started answering by
/// then is cut off after at most `store.idle_timeout` (1 s) more. The rest is start-up
/// and the degraded init, with room for a slow machine.
const GIVES_UP_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn a_reset_mid_archive_is_resumed() {
    let host = Faulted::new(CONFIG);
    let (out, _, report, proxy) = host.run_through(ARCHIVES, Fault::Reset { after: 512 << 10 }, 1);
    host.assert_updated(&out, &report);
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn resets_after_progress_every_time_are_resumed_piece_by_piece() {
    let host = Faulted::new(CONFIG);
    let fault = Fault::Reset { after: 512 << 10 };
    let (out, _, report, proxy) = host.run_through(ARCHIVES, fault, usize::MAX);
    host.assert_updated(&out, &report);
    assert!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst) >= 5);
}

#[test]
fn a_reset_before_any_byte_every_time_degrades_within_the_deadline() {
    let host = Faulted::new(CONFIG);
    let fault = Fault::Reset { after: 0 };
    let (out, took, report, _) = host.run_through(ARCHIVES, fault, usize::MAX);
    host.assert_degraded(&out, &report, "store unreachable");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}

#[test]
fn a_stalled_answer_is_cut_off_after_idle_timeout_and_retried() {
    let host = Faulted::new(CONFIG);
    let (out, took, report, _) = host.run_through(ARCHIVES, Fault::Stall { after: 1000 }, 1);
    host.assert_updated(&out, &report);
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_server_that_always_stalls_degrades_within_the_bound() {
    let host = Faulted::new(CONFIG);
    let (out, took, report, _) = host.run_through(ARCHIVES, Fault::Stall { after: 0 }, usize::MAX);
    host.assert_degraded(&out, &report, "store unreachable");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}

#[test]
fn a_slow_but_steady_download_outlasts_the_deadline() {
    // 3 MiB in 48 pieces, one every 60 ms: ~2.9 s, longer than store.deadline (2 s)
    // and than idle_timeout (1 s), yet never silent for long.
    let host = Faulted::new(CONFIG);
    let fault = Fault::Trickle {
        bytes: 64 << 10,
        every: Duration::from_millis(60),
    };
    let (out, took, report, _) = host.run_through(ARCHIVES, fault, usize::MAX);
    host.assert_updated(&out, &report);
    assert!(took > Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_download_longer_than_30_s_is_not_cut_off() {
    // 3 MiB in 48 pieces, one every 700 ms: ~34 s, longer than any whole-request
    // timeout a store client sets by default (object_store's is 30 s).
    let host = Faulted::new(CONFIG);
    let fault = Fault::Trickle {
        bytes: 64 << 10,
        every: Duration::from_millis(700),
    };
    let (out, took, report, _) = host.run_through(ARCHIVES, fault, usize::MAX);
    host.assert_updated(&out, &report);
    assert!(took > Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_reset_long_after_the_deadline_is_resumed() {
    // 1 MiB over ~3 s, then a reset: later than store.deadline (2 s) after the request
    // started, when the store client has stopped retrying by itself.
    let host = Faulted::new(CONFIG);
    let fault = Fault::TrickleThenReset {
        bytes: 64 << 10,
        every: Duration::from_millis(190),
        after: 1 << 20,
    };
    let (out, took, report, proxy) = host.run_through(ARCHIVES, fault, 1);
    host.assert_updated(&out, &report);
    assert!(took > Duration::from_secs(3), "{took:?}");
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_trickle_is_stopped_by_deploy_timeout() {
    let host = Faulted::new(&format!("{CONFIG}timeout = \"2s\"\n"));
    let fault = Fault::Trickle {
        bytes: 1024,
        every: Duration::from_millis(50),
    };
    let (out, took, report, _) = host.run_through(ARCHIVES, fault, usize::MAX);
    host.assert_degraded(&out, &report, "deploy.timeout");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}

#[test]
fn a_truncated_archive_is_resumed() {
    let host = Faulted::new(CONFIG);
    let (out, _, report, _) = host.run_through(ARCHIVES, Fault::Truncate { after: 100 << 10 }, 1);
    host.assert_updated(&out, &report);
}

#[test]
fn an_archive_truncated_before_any_byte_every_time_degrades() {
    let host = Faulted::new(CONFIG);
    let fault = Fault::Truncate { after: 0 };
    let (out, took, report, _) = host.run_through(ARCHIVES, fault, usize::MAX);
    host.assert_degraded(&out, &report, "store unreachable");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}

#[test]
fn a_pointer_claiming_50_gb_is_refused_without_allocating() {
    let host = Faulted::new(CONFIG);
    let fault = Fault::LieLength {
        length: 53_687_091_200,
    };
    let (out, took, report, _) = host.run_through("pointers/", fault, usize::MAX);
    host.assert_degraded(&out, &report, "over the 65536-byte limit");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}

#[test]
fn a_storm_of_503s_is_retried_through() {
    let host = Faulted::new(CONFIG);
    let (out, _, report, proxy) = host.run_through("/", Fault::Unavailable, 3);
    host.assert_updated(&out, &report);
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn endless_503s_degrade_within_the_deadline() {
    let host = Faulted::new(CONFIG);
    let (out, took, report, _) = host.run_through("/", Fault::Unavailable, usize::MAX);
    host.assert_degraded(&out, &report, "store unreachable");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}

#[test]
fn a_reset_of_one_ranged_part_is_retried() {
    let config = "[store]\ndeadline = \"5s\"\nidle_timeout = \"2s\"\n[deploy]\ndownload = \"ranges\"\ndelta = \"off\"\n";
    let host = Faulted::new(config);
    // v3 is large enough for three ranged parts of 8 MiB.
    host.push("v3", 20 << 20);
    let (out, _, report, proxy) = host.run_through(ARCHIVES, Fault::Reset { after: 1 << 20 }, 2);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["tag"], "v3");
    assert!(host.ran("v3"));
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// An instance on v1 (3 MiB of random bytes), with v2 promoted: the same bytes and
/// 1 MiB more in a new file, so that v2 arrives as a delta pack of about 1 MiB.
fn on_v1_with_a_delta_to_v2() -> Faulted {
    let host = Host::on_moto("[store]\ndeadline = \"2s\"\nidle_timeout = \"1s\"\n");
    let mut rng = fastrand::Rng::with_seed(7);
    let old: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(PAYLOAD).collect();
    let new: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(1 << 20).collect();
    host.push("v1", Some("touch \"$LOG_DIR/v1\""), &[("payload", &old)], true);
    assert_eq!(host.run(&["run"]).code, 0);
    host.push(
        "v2",
        Some("touch \"$LOG_DIR/v2\""),
        &[("payload", &old), ("added", &new)],
        true,
    );
    let log = host.path("log");
    std::fs::remove_dir_all(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    Faulted { host }
}

#[test]
fn a_reset_mid_delta_pack_is_resumed() {
    let host = on_v1_with_a_delta_to_v2();
    let (out, _, report, proxy) = host.run_through("deltas/", Fault::Reset { after: 256 << 10 }, 1);
    host.assert_updated(&out, &report);
    assert_eq!(report["via"], "delta", "{report}");
    assert_eq!(report["files_reused"], 1, "{report}");
    assert_eq!(proxy.spoiled.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_delta_pack_that_never_arrives_falls_back_to_the_full_download() {
    let host = on_v1_with_a_delta_to_v2();
    let (out, took, report, _) = host.run_through("deltas/", Fault::Reset { after: 0 }, usize::MAX);
    host.assert_updated(&out, &report);
    assert_eq!(report["via"], "full", "{report}");
    let why = report["fallback"].as_str().unwrap();
    assert!(why.contains("delta pack from v1"), "{why}");
    assert!(took < GIVES_UP_WITHIN, "{took:?}");
}
