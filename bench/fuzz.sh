#!/usr/bin/env bash
# Longer fuzzing than CI's: every property target of tests/fuzz.rs with CASES cases
# (default 20000), in a release build, printing the CPU time each took. Failures are
# kept in tests/fuzz.proptest-regressions and replayed first by every later run.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-20000}"
cargo test --release --locked --test fuzz --no-run >/dev/null 2>&1
for target in user_data_parser config_parser pointers_and_manifests unpacking_never; do
  /usr/bin/time -f "$target: %U s user, %S s system, %e s wall" \
    env PROPTEST_CASES="$cases" cargo test --release --locked --test fuzz "$target" -- --quiet 2>&1 \
    | grep -E "^$target|test result|FAILED|minimal"
done
