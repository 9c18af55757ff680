//! Fuzz targets: one function per parser of untrusted input, each checking what must
//! hold of any input (no panic, and the invariants named in it). The same functions run
//! under libFuzzer (`fuzz/`, `cargo +nightly fuzz run NAME`) and, on stable, over the
//! stored corpora in `tests/fuzz_corpora.rs`. Nothing else in the crate uses them.

use std::time::{Duration, SystemTime};

/// A target: checks one input, panicking where what must hold does not.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and libFuzzer binary have.
pub const TARGETS: [(&str, Target); 9] = [
    ("user_data", user_data),
    ("pointer", pointer),
    ("manifest", manifest),
    ("report", report),
    ("signature", signature),
    ("waves", waves),
    ("duration", duration),
    ("config", config),
    ("tar_policy", tar_policy),
];

/// User-data: what parses has only valid keys, and names usable in paths.
pub fn user_data(data: &[u8]) {
    if let Ok(parsed) = crate::identity::userdata::parse(data) {
        for key in ["environment", "role", "context", "machine_id"] {
            if let Some(value) = parsed.get(key) {
                assert!(
                    crate::identity::userdata::check_name(value).is_ok(),
                    "{key}={value:?}"
                );
            }
        }
    }
}

/// A pointer: what parses names a valid tag and digest, its free text printable, and
/// its rollout, if kept, checked.
pub fn pointer(data: &[u8]) {
    let Ok(pointer) = crate::release::Pointer::parse(data) else {
        return;
    };
    assert!(crate::release::check_tag(&pointer.tag).is_ok());
    assert!(crate::text::is_printable(&pointer.updated_by));
    if let Some(rollout) = &pointer.rollout {
        assert!(rollout.check().is_ok());
        let percent = rollout.effective_percent(SystemTime::now());
        assert!((0.0..=100.0).contains(&percent), "{percent}");
    }
    let assigned = pointer.assign("i-fuzz", SystemTime::now());
    assert!(crate::release::check_tag(&assigned.tag).is_ok());
    let _ = crate::trust::check_pointer("prod", &pointer, SystemTime::now());
}

/// A manifest: what parses is for the tag asked, at its content address.
pub fn manifest(data: &[u8]) {
    if let Ok(manifest) = crate::release::Manifest::parse(data, "v1") {
        assert_eq!(manifest.tag, "v1");
        assert!(manifest.archive.starts_with("blobs/sha256/"));
        assert!(crate::text::is_printable(&manifest.created_by));
    }
}

/// A report, as `status` and the agent read one back.
pub fn report(data: &[u8]) {
    if let Ok(report) = serde_json::from_slice::<crate::report::Report>(data) {
        let _ = report.summary();
        let _ = report.to_json();
    }
}

/// A signature file beside an object: never a panic, whatever its bytes (minisign
/// itself panics on some; they are refused first).
pub fn signature(data: &[u8]) {
    let keypair = minisign::KeyPair::generate_unencrypted_keypair().expect("a key pair");
    let mut keys = crate::trust::Keys::default();
    keys.add(keypair.pk);
    let store = fuzz_store();
    let verified = keys.verify(&store, "pointers/prod.json", b"{}", Some(data));
    assert!(verified.is_err(), "a random signature verified");
    let _ = keys.signed_serial(&store, "pointers/prod.json", data);
}

/// Rollout specs from the command line: waves, percentages, salts.
pub fn waves(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(waves) = crate::release::rollout::parse_waves(text) {
        assert!(!waves.is_empty());
        assert_eq!(waves.last().map(|w| w.percent), Some(100.0));
    }
    if let Ok(percent) = crate::release::rollout::parse_percent(text) {
        assert!((0.0..=100.0).contains(&percent));
    }
    let _ = crate::release::rollout::check_salt(text);
}

/// Durations and sizes in the config file: capped at a year.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(duration) = crate::units::duration::parse(text) {
        assert!(duration <= Duration::from_secs(366 * 86400), "{duration:?}");
    }
    let _ = crate::units::size::parse(text);
    let _ = crate::release::sign::Expiry::parse(text, SystemTime::now());
}

/// The config file: an error, or a config, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
    }
}

/// The unpack policy over a tar stream: every accepted entry has a relative path with
/// no `..` in it, within the caps.
pub fn tar_policy(data: &[u8]) {
    let limits = crate::archive::policy::Limits {
        max_entries: 64,
        max_unpacked_bytes: 1 << 20,
        max_path_bytes: 256,
    };
    let _ = crate::archive::entries::walk(data, limits, |checked, entry| {
        let path = std::path::Path::new(&checked.path);
        assert!(!path.is_absolute(), "{}", checked.path);
        assert!(
            path.components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{}",
            checked.path
        );
        std::io::copy(entry, &mut std::io::sink()).map(drop)
    });
}

/// A store for the targets that need one to name: an empty local directory.
fn fuzz_store() -> crate::store::Store {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bootlace-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    });
    let config = crate::store::Config {
        url: Some(format!("file://{}", dir.display())),
        ..Default::default()
    };
    crate::store::open(&config, None, crate::store::Access::Read).expect("a local store")
}
