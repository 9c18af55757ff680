//! Black-box: the release commands (DESIGN §2, §4) against `file://`, `moto_server`
//! and `rclone serve s3`, all on loopback. What every store must do alike is in
//! `tests/stores.rs`; here are the cases about the commands themselves.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::archives;
use support::backend::{Backend, Env, path};
use support::{bootlace, run};

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

#[test]
fn a_prefix_that_needs_percent_encoding_is_one_folder_not_encoded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("a"), "a").unwrap();
    let place = support::s3::moto().place();
    for (prefix, tag) in [("a%20b", "v1"), ("a b", "v2")] {
        let store = format!("s3://{place}/{prefix}");
        let command = || {
            let mut command = bootlace();
            command
                .env("AWS_ENDPOINT_URL", &support::s3::moto().endpoint)
                .env("BOOTLACE_STORE", &store);
            command
        };
        let out = run(command().args(["release", "push", path(&tree), "--tag", tag, "--env", "prod"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let out = run(command().args(["--json", "release", "list"]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let listed: Value = serde_json::from_str(&out.stdout).unwrap();
        let tags: Vec<&str> = listed["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tag"].as_str().unwrap())
            .collect();
        assert!(tags.contains(&tag), "{prefix}: {tags:?}");
    }
    // Both name the folder `a b`: one store, both tags, nothing under `a%2520b`.
    assert!(support::s3::moto().object(&place, "a b/builds/v1.json").is_some());
    assert!(support::s3::moto().object(&place, "a b/builds/v2.json").is_some());
    assert!(
        support::s3::moto()
            .object(&place, "a%20b/builds/v1.json")
            .is_none()
    );
}

#[test]
fn credentials_in_a_store_url_are_refused_and_never_echoed() {
    for url in [
        "s3://AKIAEXAMPLE:sekrit-key@bucket/app",
        "s3://bucket/app?X-Amz-Credential=sekrit-key",
    ] {
        let out = run(bootlace().env("BOOTLACE_STORE", url).args(["release", "list"]));
        assert_eq!(out.code, 2, "{url}: {}", out.stderr);
        assert!(
            out.stderr.contains("do not belong in a store URL"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("sekrit") && !out.stdout.contains("sekrit"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn manifest_and_pointer_text_is_printed_printable() {
    let env = Env::new(Backend::File);
    let tree = env.tree("app", "x");
    env.json(&["release", "push", path(&tree), "--tag", "v1", "--env", "prod"]);
    let store = env.dir.path().join("store");
    let manifest = store.join("builds/v1.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    value["created_by"] = "\u{1b}[2Jmallory".into();
    value["source_revision"] = "abc\u{1b}]0;owned\u{7}".into();
    std::fs::write(&manifest, serde_json::to_vec(&value).unwrap()).unwrap();
    for args in [&["release", "list"][..], &["release", "show", "v1"]] {
        let out = env.run(args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            !out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'),
            "{args:?}: {:?}",
            out.stdout
        );
    }
    assert!(env.run(&["release", "show", "v1"]).stdout.contains(" [2Jmallory"));
}
