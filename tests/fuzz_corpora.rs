//! The libFuzzer corpora (`fuzz/corpus/<target>/`), replayed on stable through the same
//! target functions `cargo +nightly fuzz` runs (`bootlace::fuzz`): every input a
//! fuzzer kept, and every crash it found once (`fuzz/regressions/<target>/`), must
//! pass the target's checks.

use std::path::Path;

#[test]
fn every_stored_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (name, target) in bootlace::fuzz::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} fails its checks", path.display());
                inputs += 1;
            }
        }
        assert!(
            inputs > 0,
            "no stored inputs for fuzz target {name} in fuzz/corpus/{name}"
        );
        replayed += inputs;
    }
    assert!(replayed >= bootlace::fuzz::TARGETS.len());
}
