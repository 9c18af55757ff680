#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ (libFuzzer through cargo-fuzz, on the
# nightly toolchain): SECONDS seconds each (default 3600, one CPU-hour), one at a time.
# Each run reads the stored corpus fuzz/corpus/<target>/ and writes what it finds to
# fuzz/work/<target>/ (not kept); at the end the inputs that add coverage are merged
# into the stored corpus (libFuzzer -merge=1). A crash is kept in fuzz/artifacts/ and
# belongs, once fixed, in fuzz/regressions/<target>/, which tests/fuzz_corpora.rs
# replays on stable. Prints, per target, libFuzzer's last line: executions, coverage
# (cov), features (ft), corpus size and speed.
# The stable proptest targets of tests/fuzz.rs: `PROPTEST_CASES=20000 cargo test
# --release --test fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-3600}"
shift || true
targets=("$@")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O >/dev/null
bin=fuzz/target/x86_64-unknown-linux-gnu/release
for target in "${targets[@]}"; do
  log=$(mktemp)
  mkdir -p "fuzz/work/$target" "fuzz/corpus/$target" "fuzz/artifacts/$target"
  "$bin/$target" "fuzz/work/$target" "fuzz/corpus/$target" -max_total_time="$seconds" \
    -rss_limit_mb=2048 -timeout=10 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 ||
    echo "$target: FAILED (see $log and fuzz/artifacts/$target)"
  echo "$target: $(grep -E '^#[0-9]+' "$log" | tail -1)"
  "$bin/$target" -merge=1 "fuzz/corpus/$target" "fuzz/work/$target" >/dev/null 2>&1
  rm -rf "fuzz/work/$target"
done
