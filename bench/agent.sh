#!/usr/bin/env bash
# The agent's figures (DESIGN §6.2), release build, loopback only:
#   1. idle: 10,000 unchanged checks at a 10 ms interval on a file:// store: RSS at the
#      1,000th and the 10,000th check, peak RSS, CPU per check;
#   2. requests: unchanged checks against moto_server, counted in moto's own request
#      log: requests per check, and how many were answered 304;
#   3. reaction: interval 2s, from the end of `release promote` to the new release's
#      init finished;
#   4. rollback: from the end of the failed health check to good's init finished.
# Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=.venv
if ! [ -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
fi
export PATH="$root/$venv/bin:$PATH"
cargo build --release --quiet
bootlace=$root/target/release/bootlace
work=$(mktemp -d /tmp/bootlace-agent-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1

now() { date +%s.%N; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# An instance: user-data, config, a release tree whose init logs its end time.
instance() { # dir store config
  local dir=$1
  mkdir -p "$dir/tree/bootstrap/b" "$dir/log"
  printf 'environment=prod\nrole=web\ncontext=b\nmachine_id=i-bench\n' >"$dir/user-data"
  printf '#!/bin/sh\ndate +%%s.%%N > "$LOG_DIR/init-$BOOTLACE_TAG-$BOOTLACE_PHASE"\n' >"$dir/tree/bootstrap/b/bootstrapper.sh"
  chmod +x "$dir/tree/bootstrap/b/bootstrapper.sh"
  printf '%s\n' "$3" >"$dir/config.toml"
  export BOOTLACE_CONFIG=$dir/config.toml BOOTLACE_STORE=$2 BOOTLACE_STATE_DIR=$dir/state \
    BOOTLACE_IDENTITY=file:$dir/user-data LOG_DIR=$dir/log
}
push() { # dir tag [health-file]
  echo "$2" >"$1/tree/version"
  "$bootlace" -q release push "$1/tree" --tag "$2" --env prod >/dev/null
}

# 1. idle, file:// --------------------------------------------------------------------
dir=$work/idle
instance "$dir" "file://$dir/store" $'[agent]\ninterval = "10ms"\njitter = "0s"\nreport_interval = "1h"'
push "$dir" v1
"$bootlace" -q run >/dev/null
"$bootlace" -v agent 2>"$dir/agent.log" &
pid=$!
checks() { grep -c 'unchanged' "$dir/agent.log" || true; }
until [ "$(checks)" -ge 1000 ]; do sleep 0.05; done
rss_1k=$(rss_kib $pid); cpu_1k=$(cpu_ticks $pid); n_1k=$(checks)
until [ "$(checks)" -ge 10000 ]; do sleep 0.2; done
rss_10k=$(rss_kib $pid); hwm=$(hwm_kib $pid); cpu_10k=$(cpu_ticks $pid); n_10k=$(checks)
kill -TERM $pid; wait $pid || true
hz=$(getconf CLK_TCK)
cpu_per_check_ms=$(echo "($cpu_10k - $cpu_1k) * 1000 / $hz / ($n_10k - $n_1k)" | bc -l)

# 2. requests, moto ---------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
until curl -s "http://127.0.0.1:$port" >/dev/null; do sleep 0.1; done
curl -s -X PUT "http://127.0.0.1:$port/bench" >/dev/null
dir=$work/requests
instance "$dir" "s3://bench/app" $'[agent]\ninterval = "50ms"\njitter = "0s"'
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
push "$dir" v1
"$bootlace" -q run >/dev/null
before=$(grep -c 'pointers/prod.json' "$work/moto.log" || true)
"$bootlace" -v agent 2>"$dir/agent.log" &
pid=$!
until [ "$(grep -c unchanged "$dir/agent.log" || true)" -ge 500 ]; do sleep 0.1; done
kill -TERM $pid; wait $pid || true
unchanged=$(grep -c unchanged "$dir/agent.log")
gets=$(( $(grep -c 'pointers/prod.json' "$work/moto.log") - before ))
not_modified=$(grep 'pointers/prod.json' "$work/moto.log" | tail -n "$gets" | grep -c '" 304' || true)

# 3. reaction, moto, interval 2s ----------------------------------------------------------
dir=$work/reaction
instance "$dir" "s3://bench/reaction" $'[agent]\ninterval = "2s"\njitter = "0s"'
push "$dir" v1
"$bootlace" -q run >/dev/null
"$bootlace" agent 2>"$dir/agent.log" &
pid=$!
sleep 1
reactions=""
for tag in v2 v3 v4; do
  echo "$tag" >"$dir/tree/version"
  "$bootlace" -q release push "$dir/tree" --tag "$tag" >/dev/null
  "$bootlace" -q release promote "$tag" --env prod >/dev/null
  promoted=$(now)
  until [ -f "$dir/log/init-$tag-update" ]; do sleep 0.02; done
  reactions="$reactions $(echo "$(cat "$dir/log/init-$tag-update") - $promoted" | bc -l)"
  sleep "0.$RANDOM"
done
kill -TERM $pid; wait $pid || true
deploy_ms=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["timings_ms"]["deploy"])' "$dir/state/last-run.json")

# 4. rollback ----------------------------------------------------------------------------
dir=$work/rollback
instance "$dir" "file://$dir/store" $'[health]\ncommand = "test -f version2 || { date +%s.%N > \\"$LOG_DIR/health-failed\\"; exit 1; }"\ntries = 1'
touch "$dir/tree/version2"
push "$dir" v1
"$bootlace" -q run >/dev/null
rm "$dir/tree/version2"
push "$dir" v2
"$bootlace" -q agent --once >/dev/null 2>&1 || true
rollback_s=$(echo "$(cat "$dir/log/init-v1-rollback") - $(cat "$dir/log/health-failed")" | bc -l)

printf '| figure | measured | target |\n|---|---|---|\n'
printf '| idle RSS at check %s / %s | %s / %s KiB | no growth |\n' "$n_1k" "$n_10k" "$rss_1k" "$rss_10k"
printf '| idle peak RSS (10,000 checks, 10 ms interval) | %s KiB | ≤ 8 MiB |\n' "$hwm"
printf '| CPU per unchanged check (checks 1,000–10,000) | %.3f ms | ≤ 1 ms |\n' "$cpu_per_check_ms"
printf '| requests per unchanged check (moto log) | %s GETs for %s checks (+1 first read), %s answered 304 | 1 |\n' "$gets" "$unchanged" "$not_modified"
printf '| reaction, interval 2 s, promote → init done | %s s (deploy %s ms) | ≤ 2 s + deploy |\n' "$(echo $reactions | tr ' ' '/')" "$deploy_ms"
printf '| rollback, failed health check → good'"'"'s init done | %.3f s | ≤ 1 s + init |\n' "$rollback_s"
