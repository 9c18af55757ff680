#!/usr/bin/env bash
# Builds the .deb (DESIGN §6.7) from this checkout: the release binary, man pages and
# completions generated from the same clap definitions (examples/package_assets.rs),
# the default config (dist/config.toml, checked against the config types by a test)
# and both units. Then checks it: lintian with no errors, `systemd-analyze verify` on
# the units as installed. Installs cargo-deb, lintian and systemd when missing.
#
#   scripts/package.sh        prints the path of the .deb on its last line
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
need_apt=()
command -v lintian >/dev/null || need_apt+=(lintian)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet

cargo build --release --locked --quiet
rm -rf target/assets
cargo run --release --locked --quiet --example package_assets -- target/assets
gzip -9n target/assets/man/*.1
deb=$(cargo deb --no-build --locked --quiet 2>/dev/null | tail -1)
[ -f "$deb" ] || { echo "package.sh: cargo deb wrote no package" >&2; exit 1; }

# Checks: lintian errors fail the build (warnings are printed), and both units must
# verify as they are installed.
lintian --fail-on error --suppress-tags-from-file /dev/null "$deb" >&2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
# The units they depend on (sysinit.target, network-online.target, …) come from this
# machine's systemd.
mkdir -p "$root/usr/lib/systemd/system"
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
for unit in bootlace.service bootlace-agent.service; do
  path=$(find "$root" -name "$unit" | head -1)
  [ -n "$path" ] || { echo "package.sh: $unit is not in the package" >&2; exit 1; }
  # The units name /usr/bin/bootlace: verified against the package's own tree.
  SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --root="$root" --man=no "/${path#"$root"/}" >&2
done
echo "$deb"
