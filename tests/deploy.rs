//! Black-box: `bootlace deploy` and `rollback` (DESIGN §5). Hostile archives are
//! planted in a `file://` store directly (as a compromised store or an old release
//! tool would), so that the instance's own checks are what stands in the way. Every
//! failure must leave the state dir and a sentinel tree beside it exactly as they were.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::archives::{self, Spec, raw_tar, sha256_hex};
use support::faulty::Faulty;
use support::s3;
use support::{Outcome, bootlace, run, write};
use tar::EntryType::{Char, Directory, Fifo, Link, Regular, Symlink};

struct Instance {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Instance {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "user-data",
            "environment=prod\nrole=web\ncontext=b\nmachine_id=i-test\n",
        );
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        write(&dir.path().join("outside"), "secret", "do not touch");
        let config = write(dir.path(), "config.toml", config);
        Self { dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self) -> Command {
        let mut command = bootlace();
        command
            .env("BOOTLACE_CONFIG", &self.config)
            .env(
                "BOOTLACE_STORE",
                format!("file://{}", self.path("store").display()),
            )
            .env("BOOTLACE_STATE_DIR", self.path("state"))
            .env(
                "BOOTLACE_IDENTITY",
                format!("file:{}", self.path("user-data").display()),
            );
        command
    }

    fn run(&self, args: &[&str]) -> Outcome {
        run(self.command().args(args))
    }

    fn deploy_ok(&self) -> serde_json::Value {
        let out = self.run(&["--json", "deploy"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Puts an archive into the store as `tag` and points prod at it, bypassing push.
    fn plant(&self, tag: &str, archive: &[u8], compression: &str, claimed_sha: Option<&str>) {
        let unpacked = archives::decoded_len(archive, compression);
        self.plant_claiming(tag, archive, compression, claimed_sha, unpacked);
    }

    /// As `plant`, with the manifest claiming `unpacked_bytes`.
    fn plant_claiming(
        &self,
        tag: &str,
        archive: &[u8],
        compression: &str,
        claimed_sha: Option<&str>,
        unpacked_bytes: u64,
    ) {
        let store = self.path("store");
        let real_sha = sha256_hex(archive);
        // A false claim is planted at the claimed content address.
        let sha = claimed_sha.unwrap_or(&real_sha);
        let extension = if compression == "zstd" {
            "tar.zst"
        } else {
            "tar.gz"
        };
        let key = format!("blobs/sha256/{sha}.{extension}");
        std::fs::create_dir_all(store.join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(store.join("builds")).unwrap();
        std::fs::create_dir_all(store.join("pointers")).unwrap();
        std::fs::write(store.join(&key), archive).unwrap();
        let manifest = json!({"format_version": 1, "tag": tag, "archive": key, "compression": compression,
            "sha256": sha, "size": archive.len(), "files": 1, "unpacked_bytes": unpacked_bytes,
            "created_at": "2026-11-25T00:00:00Z", "created_by": "test", "source_revision": null});
        std::fs::write(store.join(format!("builds/{tag}.json")), manifest.to_string()).unwrap();
        let pointer = json!({"format_version": 1, "tag": tag, "sha256": sha, "size": archive.len(), "serial": 1,
            "updated_at": "2026-11-25T00:00:00Z", "updated_by": "test", "history": []});
        std::fs::write(store.join("pointers/prod.json"), pointer.to_string()).unwrap();
    }

    /// Deploys a good v1, so that there is a `current` to protect.
    fn with_v1(self) -> Self {
        let tar = raw_tar(&[("app/", Directory, b""), ("app/v", Regular, b"1")]);
        self.plant("v1", &archives::zstd(&tar), "zstd", None);
        self.deploy_ok();
        self
    }

    fn current(&self) -> Option<String> {
        std::fs::read_link(self.path("state/current"))
            .ok()
            .map(|p| p.display().to_string())
    }

    /// Everything under state/ and outside/: paths, kinds, modes, contents, targets.
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut seen = BTreeMap::new();
        for top in ["state", "outside"] {
            snapshot_into(&self.path(top), &self.path(top), &mut seen);
        }
        seen
    }

    /// Plants `archive` as v2 and deploys it: the deploy must fail and change nothing.
    fn refuses(&self, archive: &[u8], compression: &str, claimed_sha: Option<&str>) -> String {
        let before = self.snapshot();
        self.plant("v2", archive, compression, claimed_sha);
        let out = self.run(&["deploy"]);
        assert_eq!(out.code, 1, "deploy should fail: {}", out.stderr);
        let line = out.assert_one_error_line().to_owned();
        assert_eq!(self.snapshot(), before, "something changed: {line}");
        assert_eq!(self.current().as_deref(), Some("releases/v1"));
        line
    }
}

fn snapshot_into(root: &Path, dir: &Path, seen: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        if name == "lock" {
            // Holds the pid of the last command that took it.
            continue;
        }
        let mode = meta.permissions().mode();
        let what = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            snapshot_into(root, &path, seen);
            format!("dir {mode:o}")
        } else {
            format!(
                "file {mode:o} {} {}",
                meta.ino(),
                sha256_hex(&std::fs::read(&path).unwrap())
            )
        };
        seen.insert(
            format!("{}/{name}", root.file_name().unwrap().to_string_lossy()),
            what,
        );
    }
}

fn refused(entries: &[Spec]) -> String {
    let instance = Instance::new("").with_v1();
    instance.refuses(&archives::zstd(&raw_tar(entries)), "zstd", None)
}

#[test]
fn deploys_activates_and_is_idempotent() {
    let instance = Instance::new("").with_v1();
    assert_eq!(instance.current().as_deref(), Some("releases/v1"));
    let tar = raw_tar(&[
        ("./", Directory, b""),
        ("./bin/", Directory, b""),
        ("./bin/run", Regular, b"#!/bin/sh\n"),
        ("./link", Symlink, b"bin/run"),
        ("./big", Regular, &vec![7u8; 1 << 20]),
    ]);
    instance.plant("v2", &archives::gzip(&tar), "gzip", None);
    let deployed = instance.deploy_ok();
    assert_eq!(deployed["deployed"], true);
    assert_eq!(instance.current().as_deref(), Some("releases/v2"));
    let release = instance.path("state/releases/v2");
    assert_eq!(std::fs::read(release.join("bin/run")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        std::fs::read_link(release.join("link")).unwrap(),
        Path::new("bin/run")
    );
    assert_eq!(std::fs::read(release.join("big")).unwrap().len(), 1 << 20);
    assert_eq!(
        std::fs::read_link(instance.path("state/previous")).unwrap(),
        Path::new("releases/v1")
    );

    let again = instance.deploy_ok();
    assert_eq!(
        again["deployed"], false,
        "a present release is not downloaded again"
    );

    let out = instance.run(&["rollback"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(instance.current().as_deref(), Some("releases/v1"));
    let out = instance.run(&["rollback", "--to", "v9"]);
    assert_eq!(out.code, 1);
    assert!(out.assert_one_error_line().contains("no local release v9"));
}

#[test]
fn modes_are_kept_but_special_bits_and_group_other_write_are_cleared() {
    let instance = Instance::new("").with_v1();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, mode, kind) in [
        ("ro/", 0o555, Directory),
        ("ro/suid", 0o4777, Regular),
        ("open", 0o666, Regular),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, &b""[..]).unwrap();
    }
    instance.plant(
        "v2",
        &archives::zstd(&builder.into_inner().unwrap()),
        "zstd",
        None,
    );
    instance.deploy_ok();
    let mode = |p: &str| {
        std::fs::metadata(instance.path("state/releases/v2").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/suid"), 0o755);
    assert_eq!(mode("open"), 0o644);
}

#[test]
fn rejects_link_then_file_through_it() {
    // CVE-2018-20990
    let line = refused(&[("x", Symlink, b"../../../outside"), ("x/evil", Regular, b"pwned")]);
    assert!(line.contains("lies under \"x\", which is a symlink"), "{line}");
}

#[test]
fn rejects_symlink_to_parent_then_nested_dirs() {
    // CVE-2021-38511
    let line = refused(&[
        ("up", Symlink, b".."),
        ("up/outside/", Directory, b""),
        ("up/outside/x", Regular, b""),
    ]);
    assert!(line.contains("symlink"), "{line}");
}

#[test]
fn rejects_symlink_then_dir_of_the_same_name() {
    // CVE-2026-33056
    let line = refused(&[
        ("d", Symlink, b"../../../outside"),
        ("d/", Directory, b""),
        ("d/evil", Regular, b""),
    ]);
    assert!(line.contains("\"d\"") || line.contains("\"d/\""), "{line}");
}

#[test]
fn rejects_pax_size_desync() {
    // CVE-2026-33055: a PAX size of 0 hides an entry inside the next file's data.
    let mut builder = tar::Builder::new(Vec::new());
    let records = b"10 size=0\n";
    let mut pax = tar::Header::new_ustar();
    pax.set_entry_type(tar::EntryType::XHeader);
    pax.set_path("pax").unwrap();
    pax.set_size(records.len() as u64);
    pax.set_cksum();
    builder.append(&pax, &records[..]).unwrap();
    let hidden = raw_tar(&[("evil", Symlink, b"/etc")]);
    let mut outer = tar::Header::new_gnu();
    outer.set_path("innocent").unwrap();
    outer.set_mode(0o644);
    outer.set_size(512);
    outer.set_cksum();
    builder.append(&outer, &hidden[..512]).unwrap();
    let instance = Instance::new("").with_v1();
    let line = instance.refuses(&archives::zstd(&builder.into_inner().unwrap()), "zstd", None);
    assert!(line.contains("absolute"), "{line}");
}

#[test]
fn rejects_hard_links_devices_fifos_and_bad_symlinks() {
    let cases: [(Spec, &str); 6] = [
        (("h", Link, b"../../../outside/secret"), "hard link"),
        (("dev", Char, b""), "character device"),
        (("fifo", Fifo, b""), "FIFO"),
        (("abs", Symlink, b"/etc/passwd"), "absolute"),
        (("esc", Symlink, b"../../outside/secret"), "outside the release"),
        (("/abs-path", Regular, b"x"), "absolute"),
    ];
    for (entry, expected) in cases {
        let line = refused(&[("ok", Regular, b"fine"), entry]);
        assert!(line.contains(expected), "{}: {line}", entry.0);
    }
}

#[test]
fn rejects_duplicate_paths_and_parent_components() {
    let line = refused(&[("f", Regular, b"a"), ("./f", Regular, b"b")]);
    assert!(line.contains("appears twice"), "{line}");
    let line = refused(&[("a/../../outside/x", Regular, b"b")]);
    assert!(line.contains("`..`"), "{line}");
}

#[test]
fn caps_stop_decompression_bombs() {
    let instance = Instance::new("[deploy]\nmax_unpacked_bytes = \"1MiB\"\nmax_entries = 50\n").with_v1();
    // 100 MiB of zeros compresses to a few KiB.
    let zeros = vec![0u8; 100 << 20];
    let line = instance.refuses(
        &archives::zstd(&raw_tar(&[("bomb", Regular, &zeros)])),
        "zstd",
        None,
    );
    assert!(line.contains("bytes unpacked"), "{line}");
    let many: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    let specs: Vec<Spec> = many.iter().map(|n| (n.as_str(), Regular, &b""[..])).collect();
    let line = instance.refuses(&archives::zstd(&raw_tar(&specs)), "zstd", None);
    assert!(line.contains("more than 50 entries"), "{line}");
}

#[test]
fn rejects_a_sha256_mismatch() {
    let instance = Instance::new("").with_v1();
    let archive = archives::zstd(&raw_tar(&[("f", Regular, b"x")]));
    let line = instance.refuses(&archive, "zstd", Some(&"0".repeat(64)));
    assert!(line.contains("is not the archive the manifest names"), "{line}");
}

#[test]
fn rejects_a_truncated_archive() {
    let instance = Instance::new("").with_v1();
    let archive = archives::zstd(&raw_tar(&[("f", Regular, &vec![1u8; 200_000])]));
    let line = instance.refuses(&archive[..archive.len() / 2], "zstd", None);
    assert!(line.contains("does not decode"), "{line}");
}

#[test]
fn a_connection_reset_mid_download_changes_nothing() {
    let instance = Instance::new("[store]\ndeadline = \"2s\"\n").with_v1();
    let archive = archives::zstd(&raw_tar(&[("f", Regular, &fastrand_bytes(3 << 20))]));
    instance.plant("v2", &archive, "zstd", None);
    let store = instance.path("store");
    let mut objects = HashMap::new();
    for key in ["pointers/prod.json", "builds/v2.json"] {
        objects.insert(format!("app/{key}"), std::fs::read(store.join(key)).unwrap());
    }
    let blob = format!("blobs/sha256/{}.tar.zst", sha256_hex(&archive));
    objects.insert(format!("app/{blob}"), archive.clone());
    let server = Faulty::start(objects, format!("app/{blob}"));
    let before = instance.snapshot();
    let out = run(instance
        .command()
        .env("BOOTLACE_STORE", "s3://bucket/app")
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .arg("deploy"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = out.assert_one_error_line();
    assert!(
        line.contains("downloading") || line.contains("does not decode"),
        "{line}"
    );
    assert!(server.cut.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(instance.snapshot(), before);
    assert_eq!(instance.current().as_deref(), Some("releases/v1"));
}

#[test]
fn ranges_and_streams_from_moto_and_rclone_give_the_same_release() {
    // 20 MiB: more than two 8 MiB parts, so ranges are used when asked for.
    let data = fastrand_bytes(20 << 20);
    let archive = archives::zstd(&raw_tar(&[("data", Regular, &data)]));
    for (server, config) in [
        (s3::moto(), "[deploy]\ndownload = \"ranges\"\n"),
        (s3::moto(), "[deploy]\ndownload = \"stream\"\n"),
        // rclone answers a range with 200 and the range's bytes, Content-Range set:
        // taken as the range it is.
        (s3::rclone(), "[deploy]\ndownload = \"ranges\"\n"),
        (s3::rclone(), ""),
    ] {
        let instance = Instance::new(config);
        instance.plant("v1", &archive, "zstd", None);
        let place = server.place();
        copy_store(&instance.path("store"), server, &place);
        let log = deploy_v1_from(&instance, &format!("s3://{place}"), &server.endpoint, &data);
        assert!(
            !log.contains("answers ranges with the whole object"),
            "{config}: {log}"
        );
    }
}

/// Deploys v1 with `-v` from the S3 `store` at `endpoint`, checks that its `data` file
/// holds `data`, and returns what bootlace logged.
fn deploy_v1_from(instance: &Instance, store: &str, endpoint: &str, data: &[u8]) -> String {
    let out = run(instance
        .command()
        .env("BOOTLACE_STORE", store)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
        .args(["-v", "deploy"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read(instance.path("state/releases/v1/data")).unwrap(),
        data
    );
    out.stderr
}

#[test]
fn a_server_that_answers_ranges_with_the_whole_object_is_read_as_one_stream() {
    let data = fastrand_bytes(20 << 20);
    let archive = archives::zstd(&raw_tar(&[("data", Regular, &data)]));
    let instance = Instance::new("[deploy]\ndownload = \"ranges\"\n");
    instance.plant("v1", &archive, "zstd", None);
    let store = instance.path("store");
    let blob = format!("blobs/sha256/{}.tar.zst", sha256_hex(&archive));
    let mut objects = HashMap::new();
    for key in ["pointers/prod.json", "builds/v1.json", blob.as_str()] {
        objects.insert(format!("app/{key}"), std::fs::read(store.join(key)).unwrap());
    }
    // The faulty server answers a range with the whole object and a Content-Range that
    // says so; no object of this test is cut off.
    let server = Faulty::start(objects, String::new());
    let log = deploy_v1_from(&instance, "s3://bucket/app", &server.endpoint, &data);
    assert!(log.contains("answers ranges with the whole object"), "{log}");
}

#[test]
fn a_full_filesystem_fails_cleanly() {
    let instance = Instance::new("[deploy]\nreserve = 0\n");
    let small = archives::zstd(&raw_tar(&[("f", Regular, b"v1")]));
    instance.plant("v1", &small, "zstd", None);
    let store = instance.path("store");
    // v2 holds 4 MiB of incompressible data, and says so; the state dir gets a 2 MiB
    // tmpfs with room for 64 inodes.
    let big = archives::zstd(&raw_tar(&[("f", Regular, &fastrand_bytes(4 << 20))]));
    let v2 = sha256_hex(&big);
    std::fs::write(store.join(format!("blobs/sha256/{v2}.tar.zst")), &big).unwrap();
    let manifest = json!({"format_version": 1, "tag": "v2", "archive": format!("blobs/sha256/{v2}.tar.zst"),
        "compression": "zstd", "sha256": v2, "size": big.len(), "files": 1, "unpacked_bytes": 4 << 20,
        "created_at": "2026-11-25T00:00:00Z", "created_by": "test", "source_revision": null});
    std::fs::write(store.join("builds/v2.json"), manifest.to_string()).unwrap();
    // v3 holds 100 small files, but its manifest claims one: the inodes run out.
    let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    let specs: Vec<Spec> = names.iter().map(|n| (n.as_str(), Regular, &b"x"[..])).collect();
    let many = archives::zstd(&raw_tar(&specs));
    let v3 = sha256_hex(&many);
    std::fs::write(store.join(format!("blobs/sha256/{v3}.tar.zst")), &many).unwrap();
    let manifest = json!({"format_version": 1, "tag": "v3", "archive": format!("blobs/sha256/{v3}.tar.zst"),
        "compression": "zstd", "sha256": v3, "size": many.len(), "files": 1, "unpacked_bytes": 100,
        "created_at": "2026-11-25T00:00:00Z", "created_by": "test", "source_revision": null});
    std::fs::write(store.join("builds/v3.json"), manifest.to_string()).unwrap();
    let state = instance.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let bootlace = env!("CARGO_BIN_EXE_bootlace");
    // A private mount namespace: the tmpfs vanishes with the shell.
    let script = format!(
        r#"set -e
mount -t tmpfs -o size=2m,nr_inodes=64 tmpfs "{state}"
"{bootlace}" deploy >/dev/null
"{bootlace}" deploy --tag v2 && exit 9
"{bootlace}" deploy --tag v3 && exit 9
readlink "{state}/current"
ls -a "{state}/releases""#,
        state = state.display(),
    );
    let mut unshare = support::with_env_of(&instance.command(), "unshare");
    let out = run(unshare.args(["--mount", "--map-root-user", "sh", "-c", &script]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "{}", out.stderr);
    // Refused before a byte is downloaded: the manifest says it cannot fit.
    assert!(
        errors[0].contains("release v2 unpacks to 4.00 MiB") && errors[0].contains("free"),
        "{}",
        errors[0]
    );
    // Out of inodes mid-unpack: the file and the errno are named.
    assert!(
        errors[1].contains("No space left on device") && errors[1].contains("/f"),
        "{}",
        errors[1]
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "releases/v1", "{}", out.stdout);
    assert!(
        !out.stdout.contains(".staging-") && !out.stdout.contains("v2") && !out.stdout.contains("v3"),
        "{}",
        out.stdout
    );
}

#[test]
fn kill_9_at_random_moments_never_leaves_a_broken_current() {
    let instance = Instance::new("");
    let v1 = archives::zstd(&raw_tar(&[("marker", Regular, b"v1")]));
    instance.plant("v1", &v1, "zstd", None);
    instance.deploy_ok();
    // v2: 2,000 small files and a few large ones, so a deploy takes a while.
    let names: Vec<String> = (0..2000).map(|i| format!("d{}/f{i}", i % 20)).collect();
    let big = fastrand_bytes(8 << 20);
    let mut specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), Regular, &b"0123456789"[..]))
        .collect();
    specs.push(("big1", Regular, &big));
    specs.push(("marker", Regular, b"v2"));
    let v2 = archives::zstd(&raw_tar(&specs));
    instance.plant("v2", &v2, "zstd", None);
    instance.deploy_ok();
    // Timed as the trials deploy: again, into warm caches (a first deploy is slower);
    // the fastest of three, so that one slow deploy on a busy machine does not put the
    // kills after the end.
    let mut full = std::time::Duration::MAX;
    for _ in 0..3 {
        assert_eq!(instance.run(&["rollback", "--to", "v1"]).code, 0);
        std::fs::remove_dir_all(instance.path("state/releases/v2")).unwrap();
        let started = std::time::Instant::now();
        instance.deploy_ok();
        full = full.min(started.elapsed());
    }
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut interrupted = 0;
    for _ in 0..12 {
        // Back to v1, with v2 gone, then deploy v2 and kill it somewhere along the way.
        assert_eq!(instance.run(&["rollback", "--to", "v1"]).code, 0);
        let v2_dir = instance.path("state/releases/v2");
        std::fs::remove_dir_all(&v2_dir).unwrap();
        let mut child = instance
            .command()
            .arg("deploy")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(rng.f64() * 1.2));
        let _ = child.kill();
        let status = child.wait().unwrap();
        interrupted += usize::from(!status.success());
        let current = instance.current().expect("current exists");
        let marker = std::fs::read_to_string(instance.path("state").join(&current).join("marker")).unwrap();
        assert_eq!(
            format!("releases/{marker}"),
            current,
            "current names a complete release"
        );
        if marker == "v2" {
            assert_eq!(
                std::fs::read_dir(instance.path("state/releases/v2/d7"))
                    .unwrap()
                    .count(),
                100
            );
        }
        // The next deploy recovers.
        let deployed = instance.deploy_ok();
        assert_eq!(deployed["tag"], "v2");
        assert_eq!(std::fs::read(v2_dir.join("big1")).unwrap(), big);
        let leftovers = std::fs::read_dir(instance.path("state/releases"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".staging-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
    eprintln!("12 trials, {interrupted} killed before finishing (deploy takes {full:?})");
    assert!(
        interrupted >= 6,
        "too few trials hit a deploy in progress: {interrupted}"
    );
}

fn fastrand_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    fastrand::Rng::with_seed(n as u64).fill(&mut bytes);
    bytes
}

/// Copies a file:// store's objects into an S3 server under `place`.
fn copy_store(store: &Path, server: &s3::Server, place: &str) {
    for dir in ["blobs/sha256", "builds", "pointers"] {
        for entry in std::fs::read_dir(store.join(dir)).unwrap() {
            let entry = entry.unwrap();
            let key = format!("{dir}/{}", entry.file_name().to_string_lossy());
            server.put(place, &key, std::fs::read(entry.path()).unwrap());
        }
    }
}

#[test]
fn per_file_sync_mode_deploys_the_same_release() {
    let instance = Instance::new("[deploy]\nsync = \"files\"\n").with_v1();
    let tar = raw_tar(&[
        ("a/b/c", Regular, b"deep"),
        ("big", Regular, &fastrand_bytes(1 << 20)),
    ]);
    instance.plant("v2", &archives::zstd(&tar), "zstd", None);
    instance.deploy_ok();
    assert_eq!(
        std::fs::read(instance.path("state/releases/v2/a/b/c")).unwrap(),
        b"deep"
    );
}
