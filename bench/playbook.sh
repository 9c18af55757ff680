#!/usr/bin/env bash
# What bootlace adds around ansible-playbook (DESIGN §6.10): a no-op playbook run
# directly (`ansible-playbook -i localhost, -c local`), against `bootlace run` with the
# same playbook as its init (release present, `file://` store on tmpfs, file identity),
# and, for scale, `bootlace run` with a `true` shell init. Rounds alternate them (20
# runs each); the median over the rounds of each round's median is printed as a
# markdown table. ansible-core comes from .venv-ansible (scripts/test.sh installs it).
#
#   bench/playbook.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: bench/playbook.sh [--rounds N]" >&2; exit 2 ;;
  esac
done
. bench/servers.sh playbook
ansible=$root/.venv-ansible
if ! [ -x "$ansible/bin/ansible-playbook" ]; then
  python3 -m venv "$ansible"
  "$ansible/bin/pip" install --quiet --disable-pip-version-check 'ansible-core>=2.19,<2.20'
fi
export PATH="$ansible/bin:$PATH"
export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9
shm=$(mktemp -d /dev/shm/bootlace-playbook-bench.XXXXXX)
trap 'rm -rf "$shm"; cleanup' EXIT
# Two instances, each following its own environment's pointer: prod runs the playbook,
# script the shell script.
for env in prod script; do
  printf 'environment=%s\nrole=web\ncontext=b\nmachine_id=i-bench\n' "$env" > "$shm/user-data-$env"
done
export BOOTLACE_STORE=file://$shm/store
mkdir -p "$shm/playbook/bootstrap/b/prod" "$shm/script/bootstrap/b/script"
cat > "$shm/playbook/bootstrap/b/prod/bootstrapper.yml" <<'YML'
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Nothing
      ansible.builtin.debug:
        msg: "{{ bootlace_role }}"
        verbosity: 1
YML
printf '#!/bin/sh\ntrue\n' > "$shm/script/bootstrap/b/script/bootstrapper.sh"
chmod +x "$shm/script/bootstrap/b/script/bootstrapper.sh"
printf '[init]\ncandidates = ["{context}/{environment}/bootstrapper"]\n' > "$shm/config.toml"
export BOOTLACE_CONFIG=$shm/config.toml
"$bootlace" -q release push "$shm/playbook" --tag playbook --env prod > /dev/null
"$bootlace" -q release push "$shm/script" --tag script --env script > /dev/null
direct="env ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_NOCOLOR=1 ansible-playbook -i localhost, -c local -e bootlace_role=web $shm/playbook/bootstrap/b/prod/bootstrapper.yml"
with_playbook="env BOOTLACE_IDENTITY=file:$shm/user-data-prod $bootlace -q --state-dir $shm/state-playbook run"
with_script="env BOOTLACE_IDENTITY=file:$shm/user-data-script $bootlace -q --state-dir $shm/state-script run"
$with_playbook > /dev/null && $with_script > /dev/null && $direct > /dev/null
read -r d p < <(alternate "$direct" "$with_playbook")
read -r s _ < <(alternate "$with_script" "$with_script")
echo "| ansible-playbook alone | bootlace run, playbook init | added around it | bootlace run, \`true\` script init |"
echo "|---|---|---|---|"
awk -v d="$d" -v p="$p" -v s="$s" 'BEGIN {printf "| %.1f ms | %.1f ms | %+.1f ms | %.1f ms |\n", d, p, p - d, s}'
