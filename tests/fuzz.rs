//! Property-based fuzzing on the stable toolchain (proptest): the parsers of what
//! comes from outside — user-data, the config file, pointers and manifests — and the
//! unpack policy, with an escape oracle. Each target runs `PROPTEST_CASES` cases
//! (256 by default, as in CI; `bench/fuzz.sh` runs far more). Failures found are kept
//! in `tests/fuzz.proptest-regressions` and replayed first on every run.

use std::collections::BTreeMap;
use std::path::Path;

use bootlace::archive::Compression;
use bootlace::config::Config;
use bootlace::deploy::unpack::SyncMode;
use bootlace::deploy::unpack::{Options, unpack};
use bootlace::identity::userdata;
use bootlace::release::{Manifest, Pointer, check_tag};
use proptest::prelude::*;

/// Bytes that look like user-data, with every kind of damage mixed in.
fn user_data_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z_]{1,12}=[A-Za-z0-9._/ -]{0,20}",
        "(environment|role|context|machine_id|aws_access_key_id|aws_secret_access_key)=[ -~]{0,16}",
        "#[ -~]{0,20}",
        "[ -~]{0,30}",
        Just(String::new()),
    ];
    prop_oneof![
        prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// Text that looks like a config file.
fn config_text() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[identity]"),
        Just("[store]"),
        Just("[deploy]"),
        Just("[init]"),
        Just("[report]"),
        Just("[nope]"),
    ];
    let value = prop_oneof![
        "\"[0-9]{1,22}(s|m|h|d|ms|ns|y|KiB|MiB|GiB|)\"",
        "[0-9]{1,22}",
        Just("true".to_owned()),
        "\"[ -~]{0,12}\"",
        Just("[\"environment\", \"x\"]".to_owned()),
    ];
    let key = "(source|deadline|idle_timeout|state_dir|pointer|keep|download|download_window|max_entries|timeout|lock_timeout|reserve|required|candidates|root|upload|url|x)";
    let line = (section, key, value).prop_map(|(s, k, v)| format!("{s}\n{k} = {v}"));
    prop::collection::vec(line, 0..6).prop_map(|lines| lines.join("\n"))
}

/// JSON objects shaped like pointers and manifests, with wrong values mixed in.
fn store_json() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9._-]{0,10}",
        Just(".staging-x".to_owned()),
        Just("../up".to_owned()),
        Just("v 1".to_owned()),
        "[ -~]{0,8}",
    ];
    let sha = prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F]{0,70}"];
    let number = prop_oneof![
        Just(serde_json::json!(1)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!("1"))
    ];
    (tag.clone(), sha, number, tag, any::<bool>()).prop_map(|(tag, sha, number, other, manifest)| {
        let value = if manifest {
            serde_json::json!({"format_version": number, "tag": tag, "archive": format!("blobs/sha256/{sha}.tar.zst"),
                "compression": "zstd", "sha256": sha, "size": 1, "files": 1, "unpacked_bytes": 1,
                "created_at": "t", "created_by": "b", "source_revision": null})
        } else {
            serde_json::json!({"format_version": number, "tag": tag, "sha256": sha, "size": 1, "serial": 1,
                "updated_at": "t", "updated_by": "b", "history": [{"tag": other, "serial": 0, "updated_at": "t"}]})
        };
        serde_json::to_vec(&value).unwrap()
    })
}

/// One tar entry: a path built from hostile pieces, a type, and data or a link target.
#[derive(Clone, Debug)]
struct Entry {
    path: String,
    kind: u8,
    payload: Vec<u8>,
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let piece = prop_oneof![
        Just(".."),
        Just("."),
        Just(""),
        Just("a"),
        Just("b"),
        Just("link"),
        Just("..."),
        Just(".bootlace-release.json"),
    ];
    let path = (any::<bool>(), prop::collection::vec(piece, 1..5))
        .prop_map(|(absolute, parts)| format!("{}{}", if absolute { "/" } else { "" }, parts.join("/")));
    let target = prop_oneof![
        Just("..".to_owned()),
        Just("../..".to_owned()),
        Just("/etc".to_owned()),
        Just("a".to_owned()),
        Just("link/..".to_owned()),
        Just("b/../..".to_owned()),
        Just(".".to_owned()),
    ];
    let kind = prop_oneof![
        Just(b'0'),
        Just(b'5'),
        Just(b'2'),
        Just(b'1'),
        Just(b'3'),
        Just(b'6')
    ];
    let entry = (path, kind, target).prop_map(|(path, kind, target)| {
        let payload = match kind {
            b'2' | b'1' => target.into_bytes(),
            b'0' => b"data".to_vec(),
            _ => Vec::new(),
        };
        Entry { path, kind, payload }
    });
    prop::collection::vec(entry, 1..8)
}

/// A tar of `entries`, names written exactly as given (as an attacker would).
fn hostile_tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let name = entry.path.as_bytes();
        let n = name.len().min(99);
        header.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let link = matches!(entry.kind, b'1' | b'2');
        if link {
            let n = entry.payload.len().min(99);
            header.as_old_mut().linkname[..n].copy_from_slice(&entry.payload[..n]);
        }
        header.set_entry_type(tar::EntryType::new(entry.kind));
        let data: &[u8] = if entry.kind == b'0' { &entry.payload } else { b"" };
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Every path under `dir`, with what it is.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file {}", meta.len())
            };
            seen.insert(path.strip_prefix(dir).unwrap().display().to_string(), what);
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn user_data_parser_never_panics_and_accepts_only_valid_names(raw in user_data_bytes()) {
        if let Ok(mut parsed) = userdata::parse(&raw) {
            for key in ["environment", "role", "context", "machine_id"] {
                if let Some(value) = parsed.take(key) {
                    prop_assert!(userdata::check_name(&value).is_ok(), "{key}={value:?}");
                }
            }
        }
    }

    #[test]
    fn config_parser_never_panics_and_errors_are_one_line(text in config_text()) {
        if let Err(err) = Config::parse(&text, Path::new("fuzz.toml")) {
            prop_assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn pointers_and_manifests_accept_only_checked_names(raw in store_json()) {
        if let Ok(pointer) = Pointer::parse(&raw) {
            prop_assert!(check_tag(&pointer.tag).is_ok());
            prop_assert!(pointer.history.iter().all(|h| check_tag(&h.tag).is_ok()));
        }
        let tag = serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["tag"].as_str().unwrap_or("").to_owned();
        if let Ok(manifest) = Manifest::parse(&raw, &tag) {
            prop_assert!(check_tag(&manifest.tag).is_ok() || manifest.tag == tag);
            prop_assert_eq!(manifest.archive, format!("blobs/sha256/{}.tar.zst", manifest.sha256));
        }
        let _ = Pointer::parse(&raw[..raw.len() / 2]);
    }

    #[test]
    fn unpacking_never_writes_outside_the_release(entries in entries()) {
        let sandbox = tempfile::tempdir().unwrap();
        let dest = sandbox.path().join("release");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(sandbox.path().join("outside")).unwrap();
        std::fs::write(sandbox.path().join("outside/secret"), "keep").unwrap();
        let before = listing(sandbox.path());
        let archive = zstd::encode_all(&hostile_tar(&entries)[..], 1).unwrap();
        let options = Options {
            limits: Default::default(),
            sync: SyncMode::Files,
            progress: indicatif::ProgressBar::hidden(),
        };
        let result = unpack(std::io::BufReader::new(&archive[..]), Compression::Zstd, &dest, options);
        // Outside the release, nothing changed.
        let after = listing(sandbox.path());
        let outside = |l: &BTreeMap<String, String>| l.iter().filter(|(k, _)| !k.starts_with("release")).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
        prop_assert_eq!(outside(&after), outside(&before));
        if result.is_ok() {
            // Everything in an accepted release resolves inside it.
            let root = dest.canonicalize().unwrap();
            for path in listing(&dest).keys() {
                if let Ok(real) = dest.join(path).canonicalize() {
                    prop_assert!(real.starts_with(&root), "{path} resolves to {}", real.display());
                }
            }
        }
    }
}
