#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ (libFuzzer through cargo-fuzz, on the
# nightly toolchain): SECONDS seconds each (default 3600, one CPU-hour), one at a time.
# The corpora in fuzz/corpus/ grow in place (minimised with `cargo fuzz cmin` after);
# a crash is kept in fuzz/artifacts/ and should be copied to fuzz/regressions/<target>/,
# which tests/fuzz_corpora.rs replays on stable. Prints, per target, libFuzzer's last
# line: executions, coverage (cov), features (ft) and corpus size.
# The stable proptest targets of tests/fuzz.rs: `PROPTEST_CASES=20000 cargo test
# --release --test fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-3600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O >/dev/null
for target in "${targets[@]}"; do
  log=$(mktemp)
  cargo +nightly fuzz run -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    -timeout=10 >"$log" 2>&1 || echo "$target: FAILED (see $log and fuzz/artifacts/$target)"
  echo "$target: $(grep -E '^#[0-9]+' "$log" | tail -1)"
done
