//! Black-box: the release commands (DESIGN §2, §4) against `file://`, `moto_server`
//! and `rclone serve s3`, all on loopback.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::archives;
use support::s3::{self, Server};
use support::{Outcome, bootlace, run, write};

#[derive(Clone, Copy, Debug)]
enum Backend {
    File,
    Moto,
    Rclone,
}

/// One test's store and scratch space.
struct Env {
    dir: tempfile::TempDir,
    backend: Backend,
    store: String,
    place: String,
    config: PathBuf,
}

impl Env {
    fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (place, config) = match backend {
            Backend::File => (String::new(), ""),
            Backend::Moto => (s3::moto().place(), ""),
            // rclone ignores preconditions; these tests accept that knowingly.
            Backend::Rclone => (
                s3::rclone().place(),
                "[store]\nrequire_conditional_writes = false\n",
            ),
        };
        let store = match backend {
            Backend::File => format!("file://{}/store", dir.path().display()),
            _ => format!("s3://{place}"),
        };
        let config = write(dir.path(), "config.toml", config);
        Self {
            dir,
            backend,
            store,
            place,
            config,
        }
    }

    fn server(&self) -> Option<&'static Server> {
        match self.backend {
            Backend::File => None,
            Backend::Moto => Some(s3::moto()),
            Backend::Rclone => Some(s3::rclone()),
        }
    }

    fn command(&self) -> Command {
        let mut command = bootlace();
        command
            .env("BOOTLACE_STORE", &self.store)
            .env("BOOTLACE_CONFIG", &self.config);
        if let Some(server) = self.server() {
            command.env("AWS_ENDPOINT_URL", &server.endpoint);
            command
                .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Outcome {
        run(self.command().args(args))
    }

    /// Runs with `--json`, asserts success, and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let out = run(self.command().arg("--json").args(args));
        assert_eq!(out.code, 0, "{args:?} on {:?}: {}", self.backend, out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    /// An object's raw bytes, read around bootlace.
    fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self.server() {
            None => std::fs::read(self.dir.path().join("store").join(key)).ok(),
            Some(server) => server.object(&self.place, key),
        }
    }

    fn object_json(&self, key: &str) -> Value {
        serde_json::from_slice(&self.object(key).unwrap_or_else(|| panic!("{key} missing"))).unwrap()
    }

    /// A small release tree with a marker file, so different trees differ.
    fn tree(&self, name: &str, marker: &str) -> PathBuf {
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(root.join("bootstrap/b/prod")).unwrap();
        std::fs::write(
            root.join("bootstrap/b/prod/bootstrapper.sh"),
            "#!/bin/sh\necho prod\n",
        )
        .unwrap();
        std::fs::write(root.join("marker"), marker).unwrap();
        std::os::unix::fs::symlink("bootstrap/b", root.join("init")).unwrap();
        root
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    keys
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn the_release_cycle(backend: Backend) {
    let env = Env::new(backend);
    let v1 = env.tree("v1", "one");
    let pushed = env.json(&["release", "push", path(&v1), "--tag", "v1", "--env", "prod"]);
    assert_eq!(pushed["uploaded"], true);
    assert_eq!(pushed["pointer"]["pointer"]["serial"], 1);

    // The stored manifest is exactly DESIGN §4's.
    let manifest = env.object_json("builds/v1.json");
    assert_eq!(
        keys(&manifest),
        [
            "archive",
            "compression",
            "created_at",
            "created_by",
            "files",
            "format_version",
            "sha256",
            "size",
            "source_revision",
            "tag",
            "unpacked_bytes"
        ]
    );
    let sha = manifest["sha256"].as_str().unwrap();
    assert_eq!(manifest["archive"], format!("blobs/sha256/{sha}.tar.zst"));
    assert_eq!(manifest["compression"], "zstd");
    assert_eq!(manifest["files"], 2);
    assert_eq!(manifest["format_version"], 1);
    let archive = env
        .object(manifest["archive"].as_str().unwrap())
        .expect("archive stored");
    assert_eq!(archive.len() as u64, manifest["size"].as_u64().unwrap());
    assert_eq!(sha256_hex(&archive), sha);

    let v2 = env.tree("v2", "two");
    env.json(&["release", "push", path(&v2), "--tag", "v2"]);
    let promoted = env.json(&["release", "promote", "v2", "--env", "prod"]);
    assert_eq!(promoted["changed"], true);

    let pointer = env.object_json("pointers/prod.json");
    assert_eq!(
        keys(&pointer),
        [
            "format_version",
            "history",
            "serial",
            "sha256",
            "size",
            "tag",
            "updated_at",
            "updated_by"
        ]
    );
    assert_eq!(pointer["tag"], "v2");
    assert_eq!(pointer["serial"], 2);
    assert_eq!(pointer["history"][0]["tag"], "v1");
    assert_eq!(keys(&pointer["history"][0]), ["serial", "tag", "updated_at"]);

    let again = env.json(&["release", "promote", "v2", "--env", "prod"]);
    assert_eq!(
        again["changed"], false,
        "promoting the current tag changes nothing"
    );
    assert_eq!(env.object_json("pointers/prod.json")["serial"], 2);

    let back = env.json(&["release", "rollback", "--env", "prod"]);
    assert_eq!(back["pointer"]["tag"], "v1");
    assert_eq!(back["pointer"]["serial"], 3);
    let to = env.json(&["release", "rollback", "--env", "prod", "--to", "v2"]);
    assert_eq!(to["pointer"]["tag"], "v2");

    let list = env.json(&["release", "list"]);
    let tags: Vec<&str> = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), 2);
    assert!(tags.contains(&"v1") && tags.contains(&"v2"));
    let v2_entry = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == "v2")
        .unwrap();
    assert_eq!(v2_entry["pointers"], serde_json::json!(["prod"]));
    let human = env.run(&["release", "list", "--env", "prod"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("prod (serial 4)"), "{}", human.stdout);

    let shown = env.json(&["release", "show", "v1"]);
    assert_eq!(shown, manifest);
}

#[test]
fn release_cycle_on_file_store() {
    the_release_cycle(Backend::File);
}

#[test]
fn release_cycle_on_moto() {
    the_release_cycle(Backend::Moto);
}

#[test]
fn release_cycle_on_rclone_with_sigv4() {
    the_release_cycle(Backend::Rclone);
}

fn tags_are_immutable(backend: Backend) {
    let env = Env::new(backend);
    env.json(&[
        "release",
        "push",
        path(&env.tree("a", "first")),
        "--tag",
        "v1",
        "--env",
        "prod",
    ]);
    let manifest = env.object("builds/v1.json").unwrap();
    let pointer = env.object("pointers/prod.json").unwrap();
    let out = env.run(&[
        "release",
        "push",
        path(&env.tree("b", "second")),
        "--tag",
        "v1",
        "--env",
        "prod",
    ]);
    assert_eq!(out.code, 1);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("tag v1 already exists") && line.contains("immutable"),
        "{line}"
    );
    assert_eq!(env.object("builds/v1.json").unwrap(), manifest);
    assert_eq!(env.object("pointers/prod.json").unwrap(), pointer);
}

#[test]
fn tags_are_immutable_on_file_store() {
    tags_are_immutable(Backend::File);
}

#[test]
fn tags_are_immutable_on_moto() {
    tags_are_immutable(Backend::Moto);
}

#[test]
fn packaging_is_deterministic_and_archives_are_not_sent_twice() {
    let env = Env::new(Backend::Moto);
    let tree = env.tree("app", "same");
    let first = env.json(&["release", "push", path(&tree), "--tag", "v1"]);
    let second = env.json(&["release", "push", path(&tree), "--tag", "v2"]);
    assert_eq!(first["manifest"]["sha256"], second["manifest"]["sha256"]);
    assert_eq!(first["uploaded"], true);
    assert_eq!(second["uploaded"], false);

    // The same tree elsewhere, touched, still gives the same bytes.
    let copy = env.tree("copy", "same");
    let third = env.json(&["release", "push", path(&copy), "--tag", "v3"]);
    assert_eq!(third["manifest"]["sha256"], first["manifest"]["sha256"]);

    // Another SOURCE_DATE_EPOCH is another archive.
    let out = run(env.command().env("SOURCE_DATE_EPOCH", "1700000000").args([
        "--json",
        "release",
        "push",
        path(&tree),
        "--tag",
        "v4",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fourth: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_ne!(fourth["manifest"]["sha256"], first["manifest"]["sha256"]);
}

#[test]
fn existing_archives_are_pushed_as_they_are() {
    let env = Env::new(Backend::File);
    let tree = env.tree("app", "x");
    let archive = env.dir.path().join("build.tar.gz");
    // The way operators make them: `tar -C dir -czf x.tar.gz .`, with its leading `./`.
    let status = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let pushed = env.json(&["release", "push", path(&archive), "--tag", "v1"]);
    let sha = pushed["manifest"]["sha256"].as_str().unwrap();
    assert_eq!(pushed["manifest"]["compression"], "gzip");
    assert_eq!(
        pushed["manifest"]["archive"],
        format!("blobs/sha256/{sha}.tar.gz")
    );
    assert_eq!(sha, sha256_hex(&std::fs::read(&archive).unwrap()));
    assert_eq!(pushed["manifest"]["files"], 2);

    let mislabelled = env.dir.path().join("build.tar.zst");
    std::fs::copy(&archive, &mislabelled).unwrap();
    let out = env.run(&["release", "push", path(&mislabelled), "--tag", "v2"]);
    assert_eq!(out.code, 2);
    assert!(
        out.assert_one_error_line().contains("not a tar.zst archive"),
        "{}",
        out.stderr
    );
}

#[test]
fn hostile_archives_are_refused_at_push() {
    let env = Env::new(Backend::File);
    let cases: [(&str, tar::EntryType, Option<&str>, &str); 4] = [
        ("../evil", tar::EntryType::Regular, None, "`..`"),
        ("/etc/cron.d/evil", tar::EntryType::Regular, None, "absolute"),
        ("link", tar::EntryType::Symlink, Some("/etc"), "absolute"),
        ("hard", tar::EntryType::Link, Some("marker"), "hard link"),
    ];
    for (name, kind, link, expected) in cases {
        let archive = env.dir.path().join("hostile.tar.gz");
        write_raw_tar_gz(
            &archive,
            &[("marker", tar::EntryType::Regular, None), (name, kind, link)],
        );
        let out = env.run(&["release", "push", path(&archive), "--tag", "v1"]);
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        let line = out.assert_one_error_line();
        assert!(
            line.contains(expected) && line.contains("unpack policy"),
            "{name}: {line}"
        );
    }
    assert!(env.object("builds/v1.json").is_none());
    assert!(
        !env.dir.path().join("store/blobs").exists(),
        "nothing was uploaded"
    );

    let tree = env.tree("escaping", "x");
    std::os::unix::fs::symlink("../../../etc/passwd", tree.join("bootstrap/passwd")).unwrap();
    let out = env.run(&["release", "push", path(&tree), "--tag", "v1"]);
    assert_eq!(out.code, 2);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("bootstrap/passwd") && line.contains("outside the release"),
        "{line}"
    );
}

#[test]
fn promote_and_rollback_refuse_what_is_missing() {
    let env = Env::new(Backend::File);
    let out = env.run(&["release", "promote", "v9", "--env", "prod"]);
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("no release v9"),
        "{}",
        out.stderr
    );

    let pushed = env.json(&[
        "release",
        "push",
        path(&env.tree("a", "a")),
        "--tag",
        "v1",
        "--env",
        "prod",
    ]);
    let out = env.run(&["release", "rollback", "--env", "prod"]);
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("no earlier tag"),
        "{}",
        out.stderr
    );
    let out = env.run(&["release", "rollback", "--env", "staging"]);
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("nothing to roll back"),
        "{}",
        out.stderr
    );

    env.json(&["release", "push", path(&env.tree("b", "b")), "--tag", "v2"]);
    let archive = pushed["manifest"]["archive"].as_str().unwrap();
    std::fs::remove_file(env.dir.path().join("store").join(archive)).unwrap();
    let out = env.run(&["release", "promote", "v1", "--env", "staging"]);
    assert_eq!(out.code, 1);
    assert!(
        out.assert_one_error_line().contains("incomplete"),
        "{}",
        out.stderr
    );
    assert!(env.object("pointers/staging.json").is_none());
}

#[test]
fn bad_input_is_exit_2() {
    let env = Env::new(Backend::File);
    let tree = env.tree("a", "a");
    for args in [
        &["release", "push", path(&tree), "--tag", "../v1"][..],
        &["release", "push", path(&tree), "--tag", "v1", "--env", "a/b"][..],
        &["release", "push", "/nonexistent/dir", "--tag", "v1"][..],
        &["release", "push", path(&tree.join("marker")), "--tag", "v1"][..],
        &["release", "show", "..."][..],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        out.assert_one_error_line();
    }
    let out = run(bootlace().args(["release", "list"]));
    assert_eq!(out.code, 2);
    assert!(out.assert_one_error_line().contains("no store configured"));
    let out = run(bootlace().args(["--store", "ftp://x/y", "release", "list"]));
    assert_eq!(out.code, 2);
    assert!(out.assert_one_error_line().contains("unsupported scheme"));
}

#[test]
fn rclone_sigv4_wrong_secret_is_one_line_and_exit_1() {
    let env = Env::new(Backend::Rclone);
    assert_eq!(env.json(&["release", "list"])["releases"], serde_json::json!([]));
    let out = run(env
        .command()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .args(["release", "list"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("access denied") || line.contains("SignatureDoesNotMatch"),
        "{line}"
    );
    assert!(!line.contains("wrong-secret"));
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused_by_default() {
    let env = Env::new(Backend::Rclone);
    std::fs::write(&env.config, "").unwrap();
    let out = env.run(&["release", "push", path(&env.tree("a", "a")), "--tag", "v1"]);
    assert_eq!(out.code, 1);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("ignores conditional writes") && line.contains("require_conditional_writes"),
        "{line}"
    );
    assert!(env.object("builds/v1.json").is_none());
}

fn concurrent_promotes(backend: Backend) {
    let env = Env::new(backend);
    for i in 1..=8 {
        env.json(&[
            "release",
            "push",
            path(&env.tree(&format!("t{i}"), &i.to_string())),
            "--tag",
            &format!("v{i}"),
        ]);
    }
    let children: Vec<_> = (1..=8)
        .map(|i| {
            env.command()
                .args(["--json", "release", "promote", &format!("v{i}"), "--env", "prod"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut succeeded, mut retries) = (0, 0);
    for child in children {
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            let moved: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(moved["changed"], true);
            succeeded += 1;
            retries += moved["retries"].as_u64().unwrap();
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("kept changing"), "{stderr}");
        }
    }
    let pointer = env.object_json("pointers/prod.json");
    assert_eq!(
        pointer["serial"], succeeded,
        "serial advances once per successful promote"
    );
    let mut seen: Vec<&str> = pointer["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["tag"].as_str().unwrap())
        .collect();
    seen.push(pointer["tag"].as_str().unwrap());
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len() as u64,
        succeeded,
        "every successful promote is in the pointer's history"
    );
    eprintln!(
        "{backend:?}: {succeeded} of 8 concurrent promotes succeeded after {retries} lost races in all"
    );
}

#[test]
fn eight_concurrent_promotes_on_file_store() {
    concurrent_promotes(Backend::File);
}

#[test]
fn eight_concurrent_promotes_on_moto() {
    concurrent_promotes(Backend::Moto);
}

#[test]
fn large_push_streams_with_bounded_memory() {
    let env = Env::new(Backend::Moto);
    let tree = env.dir.path().join("big");
    std::fs::create_dir_all(&tree).unwrap();
    // Incompressible, so the archive is as large as the data: 210 MB.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut chunk = vec![0u8; 1 << 20];
    let mut file = std::io::BufWriter::new(std::fs::File::create(tree.join("blob.bin")).unwrap());
    for _ in 0..210 {
        rng.fill(&mut chunk);
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
    drop(file);
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "/usr/bin/time is needed to measure peak memory: apt-get install time"
    );
    let mut command = support::with_env_of(&env.command(), "/usr/bin/time");
    command
        .args(["-f", "peak-rss-kib=%M"])
        .arg(env!("CARGO_BIN_EXE_bootlace"));
    let started = std::time::Instant::now();
    let out = run(command.args(["--json", "release", "push", path(&tree), "--tag", "big"]));
    let elapsed = started.elapsed();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pushed: Value = serde_json::from_str(&out.stdout).unwrap();
    let size = pushed["manifest"]["size"].as_u64().unwrap();
    assert!(size >= 200_000_000, "{size}");
    let rss_kib: u64 = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "pushed {} MB to moto in {:.1} s ({:.0} MB/s), peak RSS {} MiB",
        size / 1_000_000,
        elapsed.as_secs_f64(),
        size as f64 / 1e6 / elapsed.as_secs_f64(),
        rss_kib / 1024
    );
    assert!(
        rss_kib < 128 * 1024,
        "peak RSS {rss_kib} KiB: the archive must not be held in memory"
    );
    let stored = env
        .object(pushed["manifest"]["archive"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        sha256_hex(&stored),
        pushed["manifest"]["sha256"].as_str().unwrap()
    );
}

fn write_raw_tar_gz(path: &Path, entries: &[(&str, tar::EntryType, Option<&str>)]) {
    let specs: Vec<archives::Spec> = entries
        .iter()
        .map(|(name, kind, link)| (*name, *kind, link.map_or(&b"data"[..], str::as_bytes)))
        .collect();
    std::fs::write(path, archives::gzip(&archives::raw_tar(&specs))).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    archives::sha256_hex(bytes)
}

fn concurrent_rollbacks_do_not_undo_each_other(backend: Backend) {
    let env = Env::new(backend);
    env.json(&[
        "release",
        "push",
        path(&env.tree("a", "1")),
        "--tag",
        "v1",
        "--env",
        "prod",
    ]);
    env.json(&[
        "release",
        "push",
        path(&env.tree("b", "2")),
        "--tag",
        "v2",
        "--env",
        "prod",
    ]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.command()
                .args(["--json", "release", "rollback", "--env", "prod"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let moved: Vec<Value> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice(&output.stdout).unwrap()
        })
        .collect();
    let pointer = env.object_json("pointers/prod.json");
    // Two rollbacks that read the same state (v2) both mean v1: one writes it, the other
    // finds it done. Only a rollback that started after the first one ended (it read v1
    // at serial 3) may roll back again, to v2 at serial 4.
    let late = moved.iter().find(|m| m["pointer"]["tag"] == "v2");
    match late {
        None => {
            assert_eq!(
                pointer["tag"], "v1",
                "both asked for v1; neither may undo the other"
            );
            assert_eq!(pointer["serial"], 3);
            let changed = moved.iter().filter(|m| m["changed"] == true).count();
            assert_eq!(changed, 1);
        }
        Some(late) => {
            assert_eq!(late["pointer"]["serial"], 4, "{late}");
            assert_eq!(late["pointer"]["history"][0]["tag"], "v1", "{late}");
            assert_eq!(late["pointer"]["history"][0]["serial"], 3, "{late}");
            assert_eq!(pointer["serial"], 4);
            assert!(moved.iter().all(|m| m["changed"] == true));
        }
    }
}

#[test]
fn concurrent_rollbacks_on_file_store() {
    concurrent_rollbacks_do_not_undo_each_other(Backend::File);
}

#[test]
fn concurrent_rollbacks_on_moto() {
    concurrent_rollbacks_do_not_undo_each_other(Backend::Moto);
}

#[test]
fn concurrent_pushes_of_one_tag_leave_exactly_one_manifest() {
    // Both pass the early check; the create-only manifest write decides.
    let env = Env::new(Backend::Moto);
    let trees: Vec<PathBuf> = (0..4)
        .map(|i| env.tree(&format!("t{i}"), &format!("tree {i}")))
        .collect();
    let children: Vec<_> = trees
        .iter()
        .map(|tree| {
            env.command()
                .args(["--json", "release", "push", path(tree), "--tag", "v1"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut winners = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            let pushed: Value = serde_json::from_slice(&output.stdout).unwrap();
            winners.push(pushed["manifest"]["sha256"].clone());
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("already exists"), "{stderr}");
        }
    }
    assert_eq!(winners.len(), 1, "exactly one push owns the tag");
    assert_eq!(env.object_json("builds/v1.json")["sha256"], winners[0]);
}
