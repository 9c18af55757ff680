#!/usr/bin/env bash
# What checking signatures costs a reboot run (DESIGN §6.5): the same signed release,
# two instances that differ only in `[trust] keys`, side by side on rclone serve s3 and
# moto_server, with the IMDS emulator. Rounds alternate the two (20 runs each); the
# median over the rounds of each round's median is printed as a markdown table.
#
#   bench/signing.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: bench/signing.sh [--rounds N]" >&2; exit 2 ;;
  esac
done
. bench/servers.sh signing
start_rclone
start_moto
start_imds 'environment=prod\nrole=web\ncontext=b\n'

"$bootlace" -q key generate --unencrypted --dir "$work" > /dev/null
public=$(tail -1 "$work/bootlace.pub")
printf '[store]\nrequire_conditional_writes = false\n' > "$work/plain.toml"
printf '[store]\nrequire_conditional_writes = false\n[trust]\nkeys = ["%s"]\n' "$public" > "$work/trusted.toml"
mkdir -p "$work/tree/bootstrap/b"
printf '#!/bin/sh\ntrue\n' > "$work/tree/bootstrap/b/bootstrapper.sh"
chmod +x "$work/tree/bootstrap/b/bootstrapper.sh"

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
  read -r p k < <(alternate "$run_plain" "$run_keys")
  awk -v s="$server" -v p="$p" -v k="$k" 'BEGIN {printf "| %s | %.1f ms | %.1f ms | %+.2f ms |\n", s, p, k, k - p}'
done
