//! One conformance suite for every store bootlace claims: the same cases, from push to
//! fleet, against each backend of [`Backend`]. A backend is one `suite!` line. The
//! cases that rest on conditional writes (create-only tags, compare-and-swap pointers)
//! are ignored, by name and with the reason, on a store that ignores preconditions.

mod support;

use serde_json::Value;
use std::sync::atomic::Ordering;

use support::archives;
use support::azure;
use support::backend::{Backend, Env, keys, path};
use support::proxy::{Fault, Proxy};
use support::run;

/// Every case, for one backend, as a module of tests named after the cases.
macro_rules! suite {
    (@cases $backend:expr, [$($guarded_attr:meta)?]) => {
        #[test]
        fn release_cycle() {
            cases::release_cycle($backend);
        }
        #[test]
        fn deploy_by_ranges_and_by_stream() {
            cases::deploy_by_ranges_and_by_stream($backend);
        }
        #[test]
        fn delta_and_full_deploys_give_one_tree() {
            cases::delta_and_full_deploys_give_one_tree($backend);
        }
        #[test]
        fn rollout_and_fleet() {
            cases::rollout_and_fleet($backend);
        }
        #[test]
        $(#[$guarded_attr])?
        fn tags_are_immutable() {
            cases::tags_are_immutable($backend);
        }
        #[test]
        $(#[$guarded_attr])?
        fn racing_pushes_of_a_tag_make_one_release() {
            cases::racing_pushes_of_a_tag_make_one_release(&Env::new($backend));
        }
        #[test]
        $(#[$guarded_attr])?
        fn racing_promotes_lose_no_update() {
            cases::racing_promotes_lose_no_update($backend);
        }
        #[test]
        $(#[$guarded_attr])?
        fn racing_rollbacks_do_not_undo_each_other() {
            cases::racing_rollbacks_do_not_undo_each_other($backend);
        }
    };
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;
            suite!(@cases $backend, []);
        }
    };
    ($module:ident, $backend:expr, without_guards = $why:literal) => {
        mod $module {
            use super::*;
            suite!(@cases $backend, [ignore = $why]);
            #[test]
            fn is_refused_where_conditional_writes_are_required() {
                assert_eq!($backend.without_guards(), Some($why));
                cases::is_refused_where_conditional_writes_are_required($backend);
            }
        }
    };
}

suite!(file, Backend::File);
suite!(moto, Backend::Moto);
suite!(seaweedfs, Backend::Seaweed);
suite!(azurite, Backend::Azurite);
suite!(gcs, Backend::Gcs);
suite!(
    rclone,
    Backend::Rclone,
    without_guards = "rclone serve s3 ignores If-None-Match and If-Match"
);

/// Azure refuses a second create with 412 where Azurite answers 409: through a proxy
/// that answers as Azure does, racing pushes of a tag still make one release.
#[test]
fn azure_refusing_a_second_create_with_412_means_the_tag_exists() {
    let env = Env::new(Backend::Azurite);
    let azurite = &azure::azurite().endpoint;
    let proxy = Proxy::start(
        azurite,
        "/builds/",
        Fault::Status { from: 409, to: 412 },
        usize::MAX,
    );
    cases::racing_pushes_of_a_tag_make_one_release(&env.through(&proxy.endpoint));
    assert!(proxy.rewritten.load(Ordering::SeqCst) > 0, "no 409 was answered");
}

mod cases {
    use super::*;

    /// Pushes of one tag at once, each of its own tree: all find the tag free and
    /// upload, one creates the manifest, and the others are refused by the store's
    /// create-only write.
    pub fn racing_pushes_of_a_tag_make_one_release(env: &Env) {
        const PUSHES: usize = 6;
        let trees: Vec<_> = (0..PUSHES)
            .map(|i| env.tree(&format!("t{i}"), &format!("tree {i}")))
            .collect();
        let pushes: Vec<_> = trees
            .iter()
            .map(|tree| {
                let mut push = env.command();
                push.args(["--json", "release", "push", path(tree), "--tag", "v1"]);
                push.stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                push.spawn().unwrap()
            })
            .collect();
        let outs: Vec<_> = pushes
            .into_iter()
            .map(|p| p.wait_with_output().unwrap())
            .collect();
        let winners: Vec<Value> = outs
            .iter()
            .filter(|out| out.status.success())
            .map(|out| serde_json::from_slice(&out.stdout).unwrap())
            .collect();
        assert_eq!(winners.len(), 1, "{:?}", env.backend);
        for out in outs.iter().filter(|out| !out.status.success()) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("tag v1 already exists"), "{stderr}");
        }
        let manifest = env.object_json("builds/v1.json");
        assert_eq!(manifest["sha256"], winners[0]["manifest"]["sha256"]);
    }

    pub fn release_cycle(backend: Backend) {
        let env = Env::new(backend);
        let v1 = env.tree("v1", "one");
        let pushed = env.json(&["release", "push", path(&v1), "--tag", "v1", "--env", "prod"]);
        assert_eq!(pushed["uploaded"], true);
        assert_eq!(pushed["pointer"]["pointer"]["serial"], 1);

        // The stored manifest is exactly DESIGN §4's, with §6.9's file index.
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
                "index",
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
        let index = &manifest["index"];
        let index_sha = index["sha256"].as_str().unwrap();
        assert_eq!(index["key"], format!("blobs/sha256/{index_sha}.index.json.zst"));
        let stored = env.object(index["key"].as_str().unwrap()).expect("index stored");
        assert_eq!(index["size"], stored.len() as u64);
        let archive = env
            .object(manifest["archive"].as_str().unwrap())
            .expect("archive stored");
        assert_eq!(archive.len() as u64, manifest["size"].as_u64().unwrap());
        assert_eq!(archives::sha256_hex(&archive), sha);

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

    pub fn tags_are_immutable(backend: Backend) {
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

    /// Eight promotes at once: every one that succeeds is in the pointer, none is lost.
    pub fn racing_promotes_lose_no_update(backend: Backend) {
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

    pub fn racing_rollbacks_do_not_undo_each_other(backend: Backend) {
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

    /// A store that ignores preconditions is refused by default, saying so, and
    /// nothing is written.
    pub fn is_refused_where_conditional_writes_are_required(backend: Backend) {
        let env = Env::new(backend);
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

    /// An instance deploys a 3 MB release by ranges and by one stream: the same bytes.
    pub fn deploy_by_ranges_and_by_stream(backend: Backend) {
        let env = Env::new(backend);
        let tree = env.tree("big", "big");
        let mut rng = fastrand::Rng::with_seed(17);
        let blob: Vec<u8> = (0..3 << 20).map(|_| rng.u8(..)).collect();
        std::fs::write(tree.join("blob.bin"), &blob).unwrap();
        env.json(&["release", "push", path(&tree), "--tag", "v1", "--env", "prod"]);
        for download in ["ranges", "stream"] {
            let config = format!(
                "{}\n[deploy]\ndownload = \"{download}\"\ndownload_window = \"1MiB\"\n",
                std::fs::read_to_string(&env.config).unwrap()
            );
            let config = support::write(env.dir.path(), &format!("{download}.toml"), config);
            let out = run(env
                .instance(download)
                .env("BOOTLACE_CONFIG", &config)
                .args(["deploy"]));
            assert_eq!(out.code, 0, "{download} on {backend:?}: {}", out.stderr);
            let deployed = env.dir.path().join(download).join("state/current/blob.bin");
            assert!(
                std::fs::read(&deployed).unwrap() == blob,
                "{download} on {backend:?}"
            );
        }
    }

    /// An update that arrives as a delta pack (DESIGN §6.9) gives exactly the tree a
    /// full download gives: contents, modes, symlinks, empty directories.
    pub fn delta_and_full_deploys_give_one_tree(backend: Backend) {
        use std::os::unix::fs::PermissionsExt;
        let env = Env::new(backend);
        let tree = env.tree("t", "1");
        for i in 0..40 {
            std::fs::write(
                tree.join(format!("f{i}.txt")),
                format!("line {i}\n").repeat(i + 1),
            )
            .unwrap();
        }
        std::fs::create_dir_all(tree.join("var/empty")).unwrap();
        env.json(&["release", "push", path(&tree), "--tag", "v1", "--env", "prod"]);
        let out = run(env.instance("i-delta").arg("deploy"));
        assert_eq!(out.code, 0, "{backend:?}: {}", out.stderr);
        // A config edit, a file removed, one added, a mode changed, a symlink moved.
        std::fs::write(tree.join("f3.txt"), "edited\n").unwrap();
        std::fs::remove_file(tree.join("f4.txt")).unwrap();
        std::fs::write(tree.join("new.txt"), "new\n").unwrap();
        std::fs::set_permissions(tree.join("f5.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(tree.join("init")).unwrap();
        std::os::unix::fs::symlink("f6.txt", tree.join("init")).unwrap();
        env.json(&["release", "push", path(&tree), "--tag", "v2", "--env", "prod"]);
        let mut trees = Vec::new();
        for (id, via) in [("i-delta", "delta"), ("i-full", "full")] {
            let out = run(env.instance(id).args(["--json", "deploy"]));
            assert_eq!(out.code, 0, "{id} on {backend:?}: {}", out.stderr);
            let deployed: Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(deployed["arrival"]["via"], via, "{id} on {backend:?}: {deployed}");
            trees.push(archives::tree_listing(
                &env.dir.path().join(id).join("state/releases/v2"),
            ));
        }
        assert_eq!(trees[0], trees[1], "{backend:?}");
        assert_eq!(trees[0], archives::tree_listing(&tree), "{backend:?}");
    }

    /// A rollout in the pointer reaches the instances it names, and the fleet view
    /// reads every instance's report back from the store.
    pub fn rollout_and_fleet(backend: Backend) {
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
        env.json(&["release", "push", path(&env.tree("b", "2")), "--tag", "v2"]);
        let out = env.run(&["release", "promote", "v2", "--env", "prod", "--percent", "100"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        for id in ["i-a", "i-b", "i-c"] {
            let out = run(env.instance(id).arg("run"));
            assert_eq!(out.code, 0, "{id} on {backend:?}: {}", out.stderr);
        }
        let fleet = env.json(&["fleet"]);
        let groups = fleet["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{fleet}");
        assert_eq!(groups[0]["tag"], "v2", "{fleet}");
        assert_eq!(groups[0]["instances"], 3, "{fleet}");
        assert_eq!(fleet["unreadable_count"], 0);
        let report = env.object_json("reports/prod/web/i-b.json");
        assert_eq!(report["rollout"]["target"], "v2");
        assert_eq!(report["rollout"]["in"], true);
    }
}
