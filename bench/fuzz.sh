#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ (libFuzzer through cargo-fuzz, on the
# nightly toolchain): SECONDS seconds of CPU each (default 3600, one CPU-hour), one
# target at a time. libFuzzer's own limit is wall-clock time, so on a busy machine a
# target runs in slices until its process has used SECONDS of CPU (user + system).
# Each run reads the stored corpus fuzz/corpus/<target>/ and writes what it finds to
# fuzz/work/<target>/ (not kept); at the end the inputs that add coverage are merged
# into the stored corpus (libFuzzer -merge=1). A crash is kept in fuzz/artifacts/ and
# belongs, once fixed, in fuzz/regressions/<target>/, which tests/fuzz_corpora.rs
# replays on stable. Prints, per target, the CPU seconds used, the executions of all
# slices, and libFuzzer's last line: coverage (cov), features (ft), corpus size, speed.
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
ticks=$(getconf CLK_TCK)
for target in "${targets[@]}"; do
  log=$(mktemp)
  mkdir -p "fuzz/work/$target" "fuzz/corpus/$target" "fuzz/artifacts/$target"
  used=0 executions=0 failed=""
  while [ "$used" -lt "$seconds" ] && [ -z "$failed" ]; do
    "$bin/$target" "fuzz/work/$target" "fuzz/corpus/$target" -max_total_time=$((seconds - used)) \
      -rss_limit_mb=2048 -timeout=10 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 &
    pid=$!
    cpu=0
    # The CPU the process has used, read while it runs (it is gone once waited for).
    while kill -0 "$pid" 2>/dev/null; do
      if stat=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null); then
        cpu=$(( ($(cut -d' ' -f1 <<<"$stat") + $(cut -d' ' -f2 <<<"$stat")) / ticks ))
      fi
      sleep 1
    done
    wait "$pid" || failed=yes
    used=$((used + cpu))
    last=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    executions=$((executions + ${last:-0}))
    # A slice that used next to no CPU would loop for ever: stop.
    [ "$cpu" -gt 0 ] || break
  done
  [ -z "$failed" ] || echo "$target: FAILED (see $log and fuzz/artifacts/$target)"
  echo "$target: ${used} s CPU, $executions executions; $(grep -E '^#[0-9]+' "$log" | tail -1)"
  "$bin/$target" -merge=1 "fuzz/corpus/$target" "fuzz/work/$target" >/dev/null 2>&1
  rm -rf "fuzz/work/$target"
done
