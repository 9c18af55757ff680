#!/usr/bin/env bash
# What fetching secrets costs a boot run (DESIGN §6.6): the same release, two instances
# that differ only in `[secrets]` (10 items: 5 SSM SecureStrings, 5 Secrets Manager
# secrets, from moto_server on loopback, into /dev/shm), on a store in rclone serve s3
# and one in moto_server, with the IMDS emulator. Rounds alternate the two (20 runs
# each); the median over the rounds of each round's median is printed as a markdown
# table.
#
#   bench/secrets.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: bench/secrets.sh [--rounds N]" >&2; exit 2 ;;
  esac
done
. bench/servers.sh secrets
start_rclone
start_moto
start_imds 'environment=prod\nrole=web\ncontext=b\n'
moto=http://127.0.0.1:$moto_port
# The emulator's region: the secrets are read there.
region=eu-west-1
for i in 1 2 3 4 5; do
  aws --endpoint-url "$moto" --region "$region" ssm put-parameter --name "/prod/web/param$i" \
    --type SecureString --value "parameter-value-$i" > /dev/null
  aws --endpoint-url "$moto" --region "$region" secretsmanager create-secret --name "prod/web/secret$i" \
    --secret-string "secret-value-$i" > /dev/null
done

secrets_dir=$(mktemp -d /dev/shm/bootlace-secrets-bench.XXXXXX)
trap 'rm -rf "$secrets_dir"; cleanup' EXIT
printf '[store]\nrequire_conditional_writes = false\n' > "$work/plain.toml"
{
  cat "$work/plain.toml"
  printf '[secrets]\ndir = "%s"\n[secrets.items]\n' "$secrets_dir"
  for i in 1 2 3 4 5; do
    printf 'param%s = "ssm:/{environment}/{role}/param%s"\n' "$i" "$i"
    printf 'secret%s = "secretsmanager:{environment}/{role}/secret%s"\n' "$i" "$i"
  done
} > "$work/secrets.toml"
mkdir -p "$work/tree/bootstrap/b"
printf '#!/bin/sh\ntrue\n' > "$work/tree/bootstrap/b/bootstrapper.sh"
chmod +x "$work/tree/bootstrap/b/bootstrapper.sh"

echo "| store | boot run, no secrets | boot run, 10 secrets | added |"
echo "|---|---|---|---|"
for server in rclone moto; do
  port=$rclone_port; [ "$server" = moto ] && port=$moto_port
  export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$port
  export AWS_ENDPOINT_URL_SSM=$moto AWS_ENDPOINT_URL_SECRETS_MANAGER=$moto
  store=s3://bench/secrets
  BOOTLACE_CONFIG=$work/plain.toml "$bootlace" -q --store "$store" release push "$work/tree" --tag v1 --env prod > /dev/null
  run_plain="env BOOTLACE_CONFIG=$work/plain.toml $bootlace -q --store $store --state-dir $work/state-plain-$server run"
  run_secrets="env BOOTLACE_CONFIG=$work/secrets.toml $bootlace -q --store $store --state-dir $work/state-secrets-$server run"
  $run_plain > /dev/null && $run_secrets > /dev/null
  [ "$(cat "$secrets_dir/secret5")" = secret-value-5 ] || { echo "secret5 was not written" >&2; exit 1; }
  read -r p s < <(alternate "$run_plain" "$run_secrets")
  awk -v n="$server" -v p="$p" -v s="$s" 'BEGIN {printf "| %s | %.1f ms | %.1f ms | %+.1f ms |\n", n, p, s, s - p}'
done
