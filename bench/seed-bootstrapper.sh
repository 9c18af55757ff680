#!/bin/sh
# The seed's bootstrapper, written the way the blog post describes it, for comparison:
# curl for the IMDS token and user-data, the AWS CLI for the pointer and the archive,
# then the same init candidates. Environment: IMDS (endpoint), STORE (s3://bucket/prefix),
# ENDPOINT (S3 endpoint URL), STATE (state dir).
set -eu
token=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 21600" "$IMDS/latest/api/token")
get() { curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/latest/$1"; }
machine_id=$(get meta-data/instance-id)
userdata=$(get user-data)
value() { printf '%s\n' "$userdata" | sed -n "s/^$1=//p"; }
environment=$(value environment); context=$(value context)
pointer=$(aws s3 cp --endpoint-url "$ENDPOINT" "$STORE/pointers/$environment.json" - --quiet)
tag=$(printf '%s' "$pointer" | sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' | head -1)
sha=$(printf '%s' "$pointer" | sed -n 's/.*"sha256": *"\([^"]*\)".*/\1/p' | head -1)
release="$STATE/releases/$tag"
if [ ! -d "$release" ]; then
  mkdir -p "$release.tmp"
  aws s3 cp --endpoint-url "$ENDPOINT" "$STORE/blobs/sha256/$sha.tar.zst" - --quiet | zstd -dq | tar x -C "$release.tmp"
  mv "$release.tmp" "$release"
fi
for script in "$context/$environment/$machine_id.sh" "$context/$environment/bootstrapper.sh" "$context/bootstrapper.sh"; do
  if [ -f "$release/bootstrap/$script" ]; then
    (cd "$release" && sh "bootstrap/$script")
    break
  fi
done
