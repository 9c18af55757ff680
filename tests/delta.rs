//! Black-box: delta updates (DESIGN §6.9). A release pushed with `--env` gets a pack
//! from the tags its pointer named; an instance holding one of them rebuilds the new
//! release from the pack, file by file against the signed index, and falls back to the
//! full download on anything wrong with the pack or its own copy, never a mixed tree.

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Outcome, bootlace, run, write};

/// An operator's tree, a `file://` store, and instances with their own state dirs.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let fleet = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        write(
            fleet.dir.path(),
            "user-data",
            "environment=prod\nrole=web\ncontext=b\nmachine_id=i-test\n",
        );
        fleet.tree_v1();
        fleet
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// 300 small files over a few directories, a config file, a binary, a symlink,
    /// an empty directory and an executable.
    fn tree_v1(&self) {
        let tree = self.path("tree");
        for d in 0..6 {
            for f in 0..50 {
                put(
                    &tree.join(format!("lib/d{d}")),
                    &format!("f{f}.txt"),
                    format!("file {f} of dir {d}\n").repeat(f + 1),
                );
            }
        }
        let config: String = (0..400)
            .map(|i| format!("key_{i} = \"value {}\"\n", i * 31))
            .collect();
        put(&tree.join("etc"), "app.conf", config);
        let binary: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        put(&tree.join("bin"), "app", binary);
        std::fs::set_permissions(tree.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("bin/app", tree.join("app")).unwrap();
        std::fs::create_dir_all(tree.join("var/empty")).unwrap();
        let init = put(
            &tree.join("bootstrap/b/prod"),
            "bootstrapper.sh",
            "#!/bin/sh\ntrue\n",
        );
        std::fs::set_permissions(init, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A 10-line edit of the config file.
    fn edit_config(&self) {
        let path = self.path("tree/etc/app.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let edited: String = text
            .lines()
            .enumerate()
            .map(|(i, line)| match i {
                200..210 => format!("key_{i} = \"changed {i}\"\n"),
                _ => format!("{line}\n"),
            })
            .collect();
        std::fs::write(path, edited).unwrap();
    }

    fn command(&self, state: &str) -> Command {
        let mut command = bootlace();
        command
            .env(
                "BOOTLACE_STORE",
                format!("file://{}", self.path("store").display()),
            )
            .env("BOOTLACE_STATE_DIR", self.path(state))
            .env(
                "BOOTLACE_IDENTITY",
                format!("file:{}", self.path("user-data").display()),
            );
        command
    }

    fn run(&self, state: &str, args: &[&str]) -> Outcome {
        run(self.command(state).args(args))
    }

    fn ok(&self, state: &str, args: &[&str]) -> String {
        let out = self.run(state, args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.all());
        out.stdout
    }

    /// Pushes the tree as `tag` and promotes it to prod.
    fn push(&self, tag: &str, extra: &[&str]) -> String {
        let mut args = vec!["--env", "prod"];
        args.extend_from_slice(extra);
        self.push_only(tag, &args)
    }

    /// Pushes the tree as `tag` with `extra` arguments.
    fn push_only(&self, tag: &str, extra: &[&str]) -> String {
        let out = self.try_push(tag, extra);
        assert_eq!(out.code, 0, "push {tag}: {}", out.all());
        out.stdout
    }

    /// Pushes the tree as `tag` with `extra` arguments, however that ends.
    fn try_push(&self, tag: &str, extra: &[&str]) -> Outcome {
        let tree = self.path("tree");
        let mut args = vec!["release", "push", tree.to_str().unwrap(), "--tag", tag];
        args.extend_from_slice(extra);
        self.run("operator", &args)
    }

    fn deploy(&self, state: &str) -> Value {
        serde_json::from_str(&self.ok(state, &["--json", "deploy"])).unwrap()
    }

    fn manifest(&self, tag: &str) -> Value {
        let text = std::fs::read(self.path(&format!("store/builds/{tag}.json"))).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    /// The pack that rebuilds `tag` from `from`.
    fn pack_path(&self, tag: &str, from: &str) -> PathBuf {
        let base = self.manifest(from)["sha256"].as_str().unwrap().to_owned();
        self.path(&format!("store/deltas/{tag}/{base}"))
    }

    fn release(&self, state: &str, tag: &str) -> PathBuf {
        self.path(&format!("{state}/releases/{tag}"))
    }

    fn current(&self, state: &str) -> String {
        let link = std::fs::read_link(self.path(&format!("{state}/current"))).unwrap();
        link.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// Writes `contents` to `dir/name`, making `dir` first.
fn put(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    write(dir, name, contents)
}

/// v1 pushed and deployed on `a`, then v2 (a 10-line config edit) pushed: the common
/// start of these tests.
fn v1_then_v2(fleet: &Fleet, push_v2: &[&str]) {
    fleet.push("v1", &[]);
    assert_eq!(fleet.deploy("a")["arrival"]["via"], "full");
    fleet.edit_config();
    fleet.push("v2", push_v2);
}

#[test]
fn a_config_change_arrives_as_a_small_delta_and_gives_the_tree_a_full_deploy_gives() {
    let fleet = Fleet::new();
    fleet.push("v1", &[]);
    let first = fleet.deploy("a");
    assert_eq!(first["arrival"]["via"], "full", "{first}");
    assert!(
        first["arrival"].get("fallback").is_none(),
        "nothing held, nothing to explain: {first}"
    );
    fleet.edit_config();
    let pushed = fleet.push("v2", &[]);
    assert!(pushed.contains("delta from v1:"), "{pushed}");
    let manifest = fleet.manifest("v2");
    let index_key = manifest["index"]["key"].as_str().unwrap();
    assert!(fleet.path(&format!("store/{index_key}")).is_file(), "{manifest}");

    let pack = std::fs::metadata(fleet.pack_path("v2", "v1")).unwrap().len();
    assert!(pack <= 16 << 10, "a 10-line change: {pack} bytes");
    let deployed = fleet.deploy("a");
    let arrival = &deployed["arrival"];
    assert_eq!(arrival["via"], "delta", "{deployed}");
    assert_eq!(arrival["bytes_downloaded"], pack, "{deployed}");
    let files = manifest["files"].as_u64().unwrap();
    assert_eq!(arrival["files_reused"], files - 1, "{deployed}");
    assert_eq!(fleet.current("a"), "v2");

    // Another instance, holding nothing, downloads v2 in full: the same tree.
    assert_eq!(fleet.deploy("b")["arrival"]["via"], "full");
    assert_eq!(
        support::archives::tree_listing(&fleet.release("a", "v2")),
        support::archives::tree_listing(&fleet.release("b", "v2"))
    );
    // And both are the tree that was pushed.
    assert_eq!(
        support::archives::tree_listing(&fleet.release("b", "v2")),
        support::archives::tree_listing(&fleet.path("tree"))
    );

    // The run report says how it arrived, in the same words.
    fleet.edit_config_again();
    fleet.push("v3", &[]);
    let out = fleet.run("a", &["--json", "run"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["via"], "delta", "{report}");
    assert_eq!(report["files_reused"], files - 1, "{report}");
    // Rolling back to v2 needs no download: it is here.
    let out = fleet.run("a", &["rollback"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(fleet.current("a"), "v2");
}

impl Fleet {
    fn edit_config_again(&self) {
        let path = self.path("tree/etc/app.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("added = true\n");
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn renamed_removed_and_new_files_and_a_changed_mode_rebuild_exactly() {
    let fleet = Fleet::new();
    fleet.push("v1", &[]);
    fleet.deploy("a");
    let tree = fleet.path("tree");
    std::fs::rename(tree.join("lib/d0"), tree.join("lib/moved")).unwrap();
    std::fs::remove_dir_all(tree.join("lib/d1")).unwrap();
    std::fs::remove_dir_all(tree.join("var")).unwrap();
    put(&tree.join("new/deep/dir"), "fresh.bin", vec![7u8; 300_000]);
    std::fs::set_permissions(tree.join("etc/app.conf"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(tree.join("app")).unwrap();
    symlink("lib/moved/f1.txt", tree.join("app")).unwrap();
    std::fs::set_permissions(tree.join("lib/d2"), std::fs::Permissions::from_mode(0o555)).unwrap();
    fleet.push("v2", &[]);
    std::fs::set_permissions(tree.join("lib/d2"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let deployed = fleet.deploy("a");
    assert_eq!(deployed["arrival"]["via"], "delta", "{deployed}");
    fleet.deploy("b");
    assert_eq!(
        support::archives::tree_listing(&fleet.release("a", "v2")),
        support::archives::tree_listing(&fleet.release("b", "v2"))
    );
}

#[test]
fn a_pack_added_later_with_release_delta_serves_the_next_deploy() {
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &["--no-delta"]);
    assert!(!fleet.pack_path("v2", "v1").exists());
    let deployed = fleet.deploy("b");
    assert_eq!(deployed["arrival"]["via"], "full");

    let out = fleet.ok("operator", &["release", "delta", "v2", "--from", "v1"]);
    assert!(out.contains("delta from v1:"), "{out}");
    assert!(fleet.pack_path("v2", "v1").is_file());
    let deployed = fleet.deploy("a");
    assert_eq!(deployed["arrival"]["via"], "delta", "{deployed}");
    assert_eq!(
        support::archives::tree_listing(&fleet.release("a", "v2")),
        support::archives::tree_listing(&fleet.release("b", "v2"))
    );

    // A base that is not a release is refused, naming it, with exit 2.
    let out = fleet.run("operator", &["release", "delta", "v2", "--from", "v0"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("v0"), "{}", out.stderr);
    let out = fleet.try_push("v9", &["--delta-from", "v0"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--delta-from v0"), "{}", out.stderr);
    assert!(
        !fleet.path("store/builds/v9.json").exists(),
        "the tag is not spent"
    );
}

#[test]
fn with_delta_off_an_update_comes_in_full_without_a_reason() {
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &[]);
    let config = write(fleet.dir.path(), "config.toml", "[deploy]\ndelta = \"off\"\n");
    let out = run(fleet
        .command("a")
        .env("BOOTLACE_CONFIG", &config)
        .args(["--json", "deploy"]));
    assert_eq!(out.code, 0, "{}", out.all());
    let deployed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(deployed["arrival"]["via"], "full", "{deployed}");
    assert!(deployed["arrival"].get("fallback").is_none(), "{deployed}");
}

/// Deploys on `a` after `tamper` changed the pack (or the instance), and checks the
/// fallback: the full path, the reason containing `says`, the tree a fresh full
/// deploy gives, and v1 untouched.
fn falls_back(tamper: impl FnOnce(&Fleet, &Path), says: &str) {
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &[]);
    tamper(&fleet, &fleet.pack_path("v2", "v1"));
    let v1_now = support::archives::tree_listing(&fleet.release("a", "v1"));
    let out = fleet.run("a", &["--json", "deploy"]);
    assert_eq!(out.code, 0, "{says}: {}", out.all());
    let deployed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(deployed["arrival"]["via"], "full", "{says}: {deployed}");
    let reason = deployed["arrival"]["fallback"].as_str().unwrap_or_default();
    assert!(reason.contains(says), "{says}: {reason}");
    assert!(out.stderr.contains(says), "the log says why too: {}", out.stderr);
    assert_eq!(fleet.current("a"), "v2");
    fleet.deploy("b");
    assert_eq!(
        support::archives::tree_listing(&fleet.release("a", "v2")),
        support::archives::tree_listing(&fleet.release("b", "v2")),
        "{says}"
    );
    assert_eq!(
        support::archives::tree_listing(&fleet.release("a", "v1")),
        v1_now,
        "{says}: the base is left as it was"
    );
    let leftovers: Vec<_> = std::fs::read_dir(fleet.path("a/releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{says}: {leftovers:?}");
}

#[test]
fn a_garbage_or_truncated_pack_falls_back_to_the_full_download() {
    falls_back(
        |_, pack| std::fs::write(pack, b"PK\x03\x04 not a pack at all").unwrap(),
        "not a delta pack",
    );
    falls_back(
        |_, pack| {
            let bytes = std::fs::read(pack).unwrap();
            std::fs::write(pack, &bytes[..bytes.len() - 7]).unwrap();
        },
        "the delta pack from v1",
    );
}

#[test]
fn a_pack_larger_than_the_archive_is_not_read() {
    falls_back(
        |fleet, pack| {
            let archive = fleet.manifest("v2")["size"].as_u64().unwrap();
            std::fs::write(pack, vec![0u8; archive as usize + 1]).unwrap();
        },
        "not smaller than the archive",
    );
}

#[test]
fn a_pack_whose_bytes_do_not_match_the_index_falls_back() {
    // One byte of the last payload (the config file's patch) flipped.
    falls_back(
        |_, pack| {
            let mut bytes = std::fs::read(pack).unwrap();
            let at = bytes.len() - 3;
            bytes[at] ^= 0x55;
            std::fs::write(pack, bytes).unwrap();
        },
        "etc/app.conf",
    );
}

#[test]
fn a_pack_naming_a_path_outside_the_release_or_not_in_the_index_falls_back() {
    for path in ["../../outside/evil", "bin/other", "/etc/passwd"] {
        falls_back(
            |_, pack| {
                let (mut header, rest) = support::archives::split_delta_pack(&std::fs::read(pack).unwrap());
                header["files"][0]["path"] = path.into();
                std::fs::write(pack, support::archives::join_delta_pack(&header, &rest)).unwrap();
            },
            "carried",
        );
    }
    assert!(!Path::new("/etc/evil").exists());
}

#[test]
fn a_pack_for_another_pair_falls_back_naming_what_it_is_for() {
    falls_back(
        |fleet, pack| {
            // A pack from v1 to v3 put where v2's belongs.
            fleet.edit_config_again();
            fleet.push_only("v3", &["--delta-from", "v1"]);
            std::fs::copy(fleet.pack_path("v3", "v1"), pack).unwrap();
        },
        "it is for tag v3",
    );
    falls_back(
        |_, pack| {
            let (mut header, rest) = support::archives::split_delta_pack(&std::fs::read(pack).unwrap());
            header["index_sha256"] = "0".repeat(64).into();
            std::fs::write(pack, support::archives::join_delta_pack(&header, &rest)).unwrap();
        },
        "it is for index",
    );
}

#[test]
fn a_local_file_edited_after_deploy_is_not_reused() {
    falls_back(
        |fleet, _| {
            let path = fleet.release("a", "v1").join("lib/d3/f7.txt");
            std::fs::write(path, "edited by the application\n").unwrap();
        },
        "changed after it was deployed",
    );
}

#[test]
fn a_pack_without_its_base_index_falls_back_and_says_so() {
    falls_back(
        |fleet, _| std::fs::remove_file(fleet.path("a/indexes/v1.json.zst")).unwrap(),
        "the file index kept for v1 does not read",
    );
}

#[test]
fn releases_pushed_before_indexes_deploy_as_before() {
    let fleet = Fleet::new();
    fleet.push("v1", &[]);
    // A manifest as an older bootlace wrote it: no index.
    let path = fleet.path("store/builds/v1.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest.as_object_mut().unwrap().remove("index");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let deployed = fleet.deploy("a");
    assert_eq!(deployed["arrival"]["via"], "full");
    assert!(!fleet.path("a/indexes/v1.json.zst").exists());
    fleet.edit_config();
    // No pack can start at v1 now: the push says so and goes on.
    let out = fleet.run(
        "operator",
        &[
            "release",
            "push",
            fleet.path("tree").to_str().unwrap(),
            "--tag",
            "v2",
            "--env",
            "prod",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("no delta pack from v1"), "{}", out.stderr);
    let deployed = fleet.deploy("a");
    assert_eq!(deployed["arrival"]["via"], "full", "{deployed}");
    assert_eq!(
        support::archives::tree_listing(&fleet.release("a", "v2")),
        support::archives::tree_listing(&fleet.path("tree"))
    );
}

#[test]
fn hardlink_reuse_shares_the_base_files_when_asked() {
    use std::os::unix::fs::MetadataExt;
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &[]);
    let config = write(
        fleet.dir.path(),
        "config.toml",
        "[deploy]\nreuse = \"hardlink\"\n",
    );
    let out = run(fleet
        .command("a")
        .env("BOOTLACE_CONFIG", &config)
        .args(["--json", "deploy"]));
    assert_eq!(out.code, 0, "{}", out.all());
    let inode = |tag: &str| {
        std::fs::metadata(fleet.release("a", tag).join("bin/app"))
            .unwrap()
            .ino()
    };
    assert_eq!(inode("v1"), inode("v2"));
    let conf = |tag: &str| {
        std::fs::metadata(fleet.release("a", tag).join("etc/app.conf"))
            .unwrap()
            .ino()
    };
    assert_ne!(conf("v1"), conf("v2"));
}

#[test]
fn plan_release_show_and_fleet_say_how_a_release_arrives() {
    let fleet = Fleet::new();
    fleet.push("v1", &[]);
    assert_eq!(fleet.run("a", &["run"]).code, 0);
    fleet.edit_config();
    fleet.push("v2", &[]);
    let pack = std::fs::metadata(fleet.pack_path("v2", "v1")).unwrap().len();

    // `plan` on the instance holding v1: the pack, and its size; changes nothing.
    let plan = fleet.ok("a", &["plan"]);
    assert!(
        plan.contains(&format!("arrival    delta from v1: a pack of {pack} bytes")),
        "{plan}"
    );
    let plan: Value = serde_json::from_str(&fleet.ok("a", &["--json", "plan"])).unwrap();
    assert_eq!(plan["arrival"]["via"], "delta", "{plan}");
    assert_eq!(plan["arrival"]["from"], "v1", "{plan}");
    assert_eq!(plan["arrival"]["bytes"], pack, "{plan}");
    assert_eq!(fleet.current("a"), "v1");
    // On an instance holding nothing: the archive and its index.
    let plan: Value = serde_json::from_str(&fleet.ok("b", &["--json", "plan"])).unwrap();
    let manifest = fleet.manifest("v2");
    let full = manifest["size"].as_u64().unwrap() + manifest["index"]["size"].as_u64().unwrap();
    assert_eq!(plan["arrival"]["via"], "full", "{plan}");
    assert_eq!(plan["arrival"]["bytes"], full, "{plan}");
    assert_eq!(plan["arrival"]["why"], Value::Null, "{plan}");
    // With the pack gone, `plan` says why the full path would be taken.
    let moved = fleet.path("pack");
    std::fs::rename(fleet.pack_path("v2", "v1"), &moved).unwrap();
    let plan = fleet.ok("a", &["plan"]);
    assert!(
        plan.contains(&format!(
            "arrival    full download of {full} bytes (no delta pack from v1"
        )),
        "{plan}"
    );
    std::fs::rename(&moved, fleet.pack_path("v2", "v1")).unwrap();

    // `release show` lists the packs that rebuild a release, by the tag they start from.
    let shown = fleet.ok("operator", &["release", "show", "v2"]);
    let line = shown.lines().find(|l| l.starts_with("delta ")).expect(&shown);
    assert!(
        line.contains("from v1 (archive ") && line.ends_with(&format!(": {pack} bytes")),
        "{shown}"
    );
    let shown = fleet.ok("operator", &["release", "show", "v1"]);
    assert!(shown.lines().any(|l| l == "deltas          none"), "{shown}");

    // The report says how v2 arrived, and the fleet view shows it per instance (both
    // state dirs share one machine id, so the last run's report is the one shown).
    assert_eq!(fleet.run("b", &["run"]).code, 0);
    assert_eq!(fleet.run("a", &["run"]).code, 0);
    let instances = fleet.ok("operator", &["fleet", "--instances"]);
    assert!(
        instances.lines().next().unwrap().ends_with("ARRIVED"),
        "{instances}"
    );
    assert!(instances.lines().nth(1).unwrap().ends_with(" B"), "{instances}");
    assert!(
        instances.lines().nth(1).unwrap().contains("  delta "),
        "{instances}"
    );
    let json: Value =
        serde_json::from_str(&fleet.ok("operator", &["--json", "fleet", "--instances"])).unwrap();
    assert_eq!(json["instances"][0]["via"], "delta", "{json}");
    assert_eq!(json["instances"][0]["bytes_downloaded"], pack, "{json}");
}

#[test]
fn a_pack_no_smaller_than_the_archive_is_not_stored() {
    let fleet = Fleet::new();
    let tiny = fleet.path("tiny");
    put(&tiny, "one.txt", "one\n");
    let push = |tag: &str| {
        let args = [
            "release",
            "push",
            tiny.to_str().unwrap(),
            "--tag",
            tag,
            "--env",
            "prod",
        ];
        fleet.ok("operator", &args)
    };
    push("v1");
    fleet.deploy("a");
    put(&tiny, "one.txt", "two\n");
    let pushed = push("v2");
    assert!(pushed.contains("delta from v1: not stored: "), "{pushed}");
    assert!(!fleet.path("store/deltas/v2").exists());
    let deployed = fleet.deploy("a");
    assert_eq!(deployed["arrival"]["via"], "full", "{deployed}");
    let why = deployed["arrival"]["fallback"].as_str().unwrap_or_default();
    assert!(why.starts_with("no delta pack from v1"), "{deployed}");
}

/// Makes a FIFO at `path`, where a file was.
fn fifo_at(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    std::fs::remove_file(path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_in_the_held_release_or_for_its_kept_index_is_a_fallback_not_a_hang() {
    falls_back(
        |fleet, _| fifo_at(&fleet.release("a", "v1").join("lib/d3/f7.txt")),
        "lib/d3/f7.txt: copying it from the base release: not a regular file",
    );
    falls_back(
        |fleet, _| fifo_at(&fleet.path("a/indexes/v1.json.zst")),
        "the file index kept for v1 does not read",
    );
    // And in a `file://` store, where the pack should be.
    falls_back(|_, pack| fifo_at(pack), "not a regular file; not read");
}

#[test]
fn a_held_file_grown_sparse_is_refused_before_a_byte_is_copied() {
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &[]);
    let grown = fleet.release("a", "v1").join("lib/d3/f7.txt");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&grown)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let deployed = fleet.deploy("a");
    assert_eq!(deployed["arrival"]["via"], "full", "{deployed}");
    let why = deployed["arrival"]["fallback"].as_str().unwrap();
    assert!(
        why.contains("lib/d3/f7.txt") && why.contains("it has 1099511627776 bytes, its index says"),
        "{why}"
    );
    assert_eq!(fleet.current("a"), "v2");
}

#[test]
fn a_folder_of_the_held_release_swapped_for_a_link_is_never_read_or_linked_through() {
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &[]);
    let config = write(
        fleet.dir.path(),
        "config.toml",
        "[deploy]\nreuse = \"hardlink\"\n",
    );
    let d5 = fleet.release("a", "v1").join("lib/d5");
    let outside = fleet.path("outside");
    std::fs::rename(&d5, &outside).unwrap();
    symlink(&outside, &d5).unwrap();
    let out = run(fleet
        .command("a")
        .env("BOOTLACE_CONFIG", &config)
        .args(["--json", "deploy"]));
    assert_eq!(out.code, 0, "{}", out.all());
    let deployed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(deployed["arrival"]["via"], "full", "{deployed}");
    let why = deployed["arrival"]["fallback"].as_str().unwrap();
    assert!(why.contains("lib/d5/"), "{why}");
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(&outside).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(
            meta.nlink(),
            1,
            "a file outside the state dir was linked into the release"
        );
    }
}

#[test]
fn a_pack_is_not_made_from_a_base_archive_that_is_not_what_its_manifest_says() {
    let fleet = Fleet::new();
    fleet.push("v1", &[]);
    fleet.edit_config();
    fleet.push_only("v2", &["--no-delta"]);
    // v1's archive swapped for one of the same size whose config file says otherwise:
    // a valid archive, but not the one v1's manifest and index name.
    let manifest = fleet.manifest("v1");
    let key = fleet.path(&format!("store/{}", manifest["archive"].as_str().unwrap()));
    let original = std::fs::read(&key).unwrap();
    let mut tar = zstd::decode_all(&original[..]).unwrap();
    let at = tar.windows(9).position(|w| w == b"value 310").unwrap();
    tar[at..at + 9].copy_from_slice(b"VALUE 310");
    let mut forged = zstd::encode_all(&tar[..], 19).unwrap();
    let pad = original.len() - forged.len();
    assert!(pad >= 8, "the forgery must not be larger");
    // A skippable zstd frame fills the rest.
    forged.extend_from_slice(&0x184D2A50u32.to_le_bytes());
    forged.extend_from_slice(&((pad - 8) as u32).to_le_bytes());
    forged.resize(original.len(), 0);
    std::fs::write(&key, &forged).unwrap();

    let out = fleet.run("operator", &["release", "delta", "v2", "--from", "v1"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("etc/app.conf") && out.stderr.contains("its index says"),
        "{}",
        out.stderr
    );
    assert!(!fleet.pack_path("v2", "v1").exists(), "no pack stored");
}

#[test]
fn a_base_named_twice_or_the_tag_itself_is_said_plainly() {
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &["--no-delta"]);
    let out = fleet.ok(
        "operator",
        &["release", "delta", "v2", "--from", "v1", "--from", "v1"],
    );
    assert_eq!(out.matches("delta from v1:").count(), 1, "{out}");
    let out = fleet.try_push("v3", &["--delta-from", "v3"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("to itself"), "{}", out.stderr);
    let out = fleet.run("operator", &["release", "delta", "v2", "--from", "nope"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("--from nope: no release nope"),
        "{}",
        out.stderr
    );
}

#[test]
fn folders_keep_their_mode_under_a_strict_umask_by_either_path() {
    use std::os::unix::process::CommandExt;
    let fleet = Fleet::new();
    v1_then_v2(&fleet, &[]);
    for (state, via) in [("a", "delta"), ("b", "full")] {
        let mut command = fleet.command(state);
        // SAFETY: umask is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0o077);
                Ok(())
            })
        };
        let out = run(command.args(["--json", "deploy"]));
        assert_eq!(out.code, 0, "{}", out.all());
        let deployed: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(deployed["arrival"]["via"], via, "{deployed}");
        let listing = support::archives::tree_listing(&fleet.release(state, "v2"));
        assert_eq!(listing["lib/d0"], "dir 755", "{state}");
        assert_eq!(listing["var/empty"], "dir 755", "{state}");
    }
}

/// On a file system with reflinks (XFS on a loop device, mounted in a private mount
/// namespace over the instance's state dir): reused files share the base's blocks; the
/// tree is the pushed one; a base file edited long enough ago, or just now, is caught
/// either way (the first by hashing the base, the second by reading the clone back);
/// a base file only touched just now is still reused.
#[test]
fn on_a_reflink_file_system_reused_files_share_blocks_and_edits_are_still_caught() {
    for tool in ["mkfs.xfs", "filefrag", "unshare"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: apt-get install xfsprogs e2fsprogs util-linux (scripts/test.sh does)"
        );
    }
    let fleet = Fleet::new();
    fleet.push("v1", &[]);
    fleet.edit_config();
    fleet.push("v2", &[]);
    let image = fleet.path("xfs.img");
    std::fs::File::create(&image).unwrap().set_len(512 << 20).unwrap();
    let made = run(Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&image));
    assert_eq!(made.code, 0, "mkfs.xfs: {}", made.all());
    std::fs::create_dir(fleet.path("a")).unwrap();
    let (a, bootlace) = (fleet.path("a"), env!("CARGO_BIN_EXE_bootlace"));
    let out_dir = fleet.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    // Each deploy of v2 starts from v1 with v2 gone: `again` rolls back and removes it.
    let script = format!(
        r#"set -e
mount -o loop "{image}" "{a}"
again() {{ "{bootlace}" -q rollback --to v1 >/dev/null; rm -rf "{a}/releases/v2"; }}
"{bootlace}" -q --json deploy --tag v1 > "{out}/v1.json"
sleep 2.2
"{bootlace}" -q --json deploy > "{out}/settled.json"
filefrag -v "{a}/releases/v2/bin/app" > "{out}/extents"
again
touch "{a}/releases/v1/bin/app"
"{bootlace}" -q --json deploy > "{out}/touched.json"
again
printf 'edited\n' > "{a}/releases/v1/lib/d3/f7.txt"
"{bootlace}" -q --json deploy > "{out}/edited-now.json"
again
printf 'edited\n' > "{a}/releases/v1/lib/d4/f7.txt"
sleep 2.2
"{bootlace}" -q --json deploy > "{out}/edited-before.json"
tar -C "{a}/releases" -cf "{out}/v2.tar" v2"#,
        image = image.display(),
        a = a.display(),
        out = out_dir.display(),
    );
    let out =
        run(support::with_env_of(&fleet.command("a"), "unshare").args(["--mount", "sh", "-c", &script]));
    assert_eq!(
        out.code,
        0,
        "needs root and a loop device (mount -o loop): {}",
        out.all()
    );
    let report = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(out_dir.join(name)).unwrap()).unwrap()
    };
    let files = fleet.manifest("v2")["files"].as_u64().unwrap();
    for name in ["settled.json", "touched.json"] {
        let arrival = &report(name)["arrival"];
        assert_eq!(arrival["via"], "delta", "{name}: {arrival}");
        assert_eq!(arrival["files_reused"], files - 1, "{name}: {arrival}");
    }
    let extents = std::fs::read_to_string(out_dir.join("extents")).unwrap();
    assert!(
        extents.contains("shared"),
        "a reflink shares the base's blocks: {extents}"
    );
    for name in ["edited-now.json", "edited-before.json"] {
        let arrival = &report(name)["arrival"];
        assert_eq!(arrival["via"], "full", "{name}: {arrival}");
        let why = arrival["fallback"].as_str().unwrap_or_default();
        assert!(why.contains("changed after it was deployed"), "{name}: {why}");
    }
    // The last tree (a full deploy) is the pushed one; the delta-built ones matched
    // their index file by file, or the deploy would have fallen back.
    let unpacked = fleet.path("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let untar = run(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-xf")
        .arg(out_dir.join("v2.tar")));
    assert_eq!(untar.code, 0, "{}", untar.all());
    assert_eq!(
        support::archives::tree_listing(&unpacked.join("v2")),
        support::archives::tree_listing(&fleet.path("tree"))
    );
}
