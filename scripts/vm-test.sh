#!/usr/bin/env bash
# Boots the .deb for real: a minimal Debian made with debootstrap from this machine's
# configured Debian mirror, the package installed in it, a file identity and a file://
# store on its disk, started by qemu under software emulation with the Debian kernel
# and no network at all. Two boots; after each, files read off the disk image (and the
# serial console) must show:
#   boot 1: bootlace.service ran at boot, deployed the release, ran its init once,
#           reported ok; bootlace-agent was active and checked the pointer;
#   boot 2: the release was found present (no download) and its init ran again;
#   both:   the journal holds bootlace's lines.
# The Debian base (debootstrap + kernel) is cached in .vm-cache/ (git-ignored).
#
#   scripts/vm-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD
cache=${VM_CACHE:-$root_dir/.vm-cache}
fail() {
  echo "vm-test: FAILED: $*" >&2
  for log in "${work:-/nonexistent}"/check-*.log; do [ -f "$log" ] && sed "s/^/  /" "$log" >&2; done
  exit 1
}
started=$(date +%s)

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debugfs >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || fail "could not install ${need[*]} from the apt sources"
fi

# The package, built and checked (lintian, systemd-analyze) by its own script.
deb=$(scripts/package.sh | tail -1)
[ -f "$deb" ] || fail "scripts/package.sh made no package"

# --- the Debian base, from the mirror apt uses here -------------------------------------
mirror="" suite=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  suite=$(awk '$1 == "Suites:" {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  read -r mirror suite < <(awk '$1 == "deb" && $2 !~ /^\[/ {print $2, $3; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] && [ -n "$suite" ] || fail "no Debian mirror in /etc/apt/sources.list(.d): debootstrap needs one"
base=$cache/base-$suite.tar
mkdir -p "$cache"
# debootstrap mounts /proc in the root it builds: a run stopped half-way leaves it mounted.
drop_build() {
  awk -v p="$1/root" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mount; do $sudo umount -l "$mount"; done
  $sudo rm -rf "$1"
}
for stale in "$cache"/debootstrap.*; do [ -d "$stale" ] && drop_build "$stale"; done
if [ ! -f "$base" ]; then
  echo "vm-test: debootstrap $suite from $mirror (cached afterwards in $base)" >&2
  build=$(mktemp -d "$cache/debootstrap.XXXXXX")
  trap 'drop_build "$build"' EXIT
  $sudo debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,linux-image-amd64,initramfs-tools,e2fsprogs \
    "$suite" "$build/root" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || fail "debootstrap from $mirror did not finish (see $cache/debootstrap.log)"
  $sudo tar -C "$build/root" -cf "$base.part" .
  mv "$base.part" "$base"
  drop_build "$build"
  trap - EXIT
fi

# --- this run's machine ---------------------------------------------------------------
work=$(mktemp -d /tmp/bootlace-vm.XXXXXX)
trap '$sudo rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
$sudo tar -C "$root" -xf "$base"
cp "$deb" "$root/tmp/bootlace.deb"
$sudo chroot "$root" dpkg -i /tmp/bootlace.deb > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i in the image"; }
rm "$root/tmp/bootlace.deb"
echo vm > "$root/etc/hostname"
mkdir -p "$root/var/log/journal"   # a persistent journal, read after shutdown
cat > "$root/etc/bootlace/user-data" <<'EOF'
environment=prod
role=web
context=vm
machine_id=i-vmtest
EOF
cat > "$root/etc/bootlace/config.toml" <<'EOF'
[identity]
source = "file:/etc/bootlace/user-data"

[store]
url = "file:///srv/store"

[agent]
interval = "5s"
EOF
# A release whose init appends a line per run, pushed into the image's store with the
# bootlace just built (the store's layout is relative to its URL).
mkdir -p "$work/release/bootstrap/vm"
cat > "$work/release/bootstrap/vm/bootstrapper.sh" <<'EOF'
#!/bin/sh
echo "init $BOOTLACE_TAG phase=$BOOTLACE_PHASE" >> /var/log/vm-init.log
EOF
chmod +x "$work/release/bootstrap/vm/bootstrapper.sh"
mkdir -p "$root/srv/store"
AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9 target/release/bootlace -q \
  --store "file://$root/srv/store" release push "$work/release" --tag vm-1 --env prod > /dev/null
# At each boot, once the agent has checked the pointer (its status line names the
# tag), write the evidence to the console and power off.
cat > "$root/usr/local/sbin/vm-check" <<'EOF'
#!/bin/sh
for _ in $(seq 120); do
  status=$(systemctl show -p StatusText --value bootlace-agent.service)
  case "$status" in *vm-1*) break ;; esac
  sleep 1
done
{
  echo "VM-CHECK boot: $(cat /proc/sys/kernel/random/boot_id)"
  echo "VM-CHECK bootlace.service: $(systemctl show -p ActiveState -p Result -p ExecMainStatus bootlace.service | sort | tr '\n' ' ')"
  echo "VM-CHECK bootlace-agent: $(systemctl is-active bootlace-agent.service) status=$(systemctl show -p StatusText --value bootlace-agent.service)"
  journalctl -b -u bootlace.service -u bootlace-agent.service --no-pager -o cat | sed 's/^/VM-JOURNAL /'
} > /var/log/vm-check.log 2>&1
# Also on the console, for a failure's log; the checks read the file, which the
# kernel's own console lines cannot interleave with.
cat /var/log/vm-check.log > /dev/ttyS0
sync
systemctl poweroff
EOF
chmod +x "$root/usr/local/sbin/vm-check"
cat > "$root/etc/systemd/system/vm-check.service" <<'EOF'
[Unit]
Description=vm-test: report what bootlace did, then power off
After=bootlace.service bootlace-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vm-check

[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/vm-check.service "$root/etc/systemd/system/multi-user.target.wants/vm-check.service"
[ -L "$root/etc/systemd/system/multi-user.target.wants/bootlace.service" ] || fail "the package did not enable bootlace.service"
[ -L "$root/etc/systemd/system/multi-user.target.wants/bootlace-agent.service" ] || fail "the package did not enable bootlace-agent.service"

kernel=$(ls "$root"/boot/vmlinuz-* | head -1)
initrd=$(ls "$root"/boot/initrd.img-* | head -1)
[ -f "$kernel" ] && [ -f "$initrd" ] || fail "no kernel or initrd in the image"
cp "$kernel" "$work/vmlinuz"; cp "$initrd" "$work/initrd"
img=$work/disk.img
$sudo mkfs.ext4 -q -L root -d "$root" "$img" 3G > /dev/null || fail "mkfs.ext4 -d"

boot() { # N: boots the image once, the console into $work/console-N.log
  local n=$1
  timeout 900 qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$work/vmlinuz" -initrd "$work/initrd" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0" \
    -drive "file=$img,format=raw,if=virtio" -nic none \
    > "$work/console-$n.log" 2>&1 < /dev/null \
    || { tail -40 "$work/console-$n.log" >&2; fail "boot $n did not power off within 15 minutes"; }
  debugfs -R "cat /var/log/vm-check.log" "$img" > "$work/check-$n.log" 2>/dev/null || true
  grep -q '^VM-CHECK boot' "$work/check-$n.log" || { tail -60 "$work/console-$n.log" >&2; fail "boot $n: vm-check never ran"; }
}
off_image() { debugfs -R "cat $1" "$img" 2>/dev/null; }

# --- boot 1: first boot ---------------------------------------------------------------
t0=$(date +%s)
boot 1
t1=$(date +%s)
report1=$(off_image /var/lib/bootlace/last-run.json)
echo "$report1" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="ok", r; assert r["tag"]=="vm-1", r' \
  || fail "boot 1: the report is not ok for vm-1: $report1"
grep -a 'VM-JOURNAL' "$work/check-1.log" | grep -q 'vm-1 (deployed)' || fail "boot 1: the journal does not show vm-1 deployed"
[ "$(off_image /var/log/vm-init.log)" = "init vm-1 phase=boot" ] || fail "boot 1: init did not run exactly once: $(off_image /var/log/vm-init.log)"
check1=$(grep -a '^VM-CHECK bootlace.service' "$work/check-1.log")
for want in ActiveState=active Result=success ExecMainStatus=0; do
  echo "$check1" | grep -q "$want" || fail "boot 1: bootlace.service: no $want in: $check1"
done
grep -a '^VM-CHECK bootlace-agent' "$work/check-1.log" | grep -q 'active status=.*vm-1' || fail "boot 1: the agent was not active with the pointer checked"

# --- boot 2: a reboot -----------------------------------------------------------------
boot 2
t2=$(date +%s)
grep -a 'VM-JOURNAL' "$work/check-2.log" | grep -q 'vm-1 (already present)' || fail "boot 2: the release was not found present"
[ "$(off_image /var/log/vm-init.log | wc -l)" = 2 ] || fail "boot 2: init did not run again: $(off_image /var/log/vm-init.log)"
off_image /var/lib/bootlace/last-run.json | grep -q '"status": "ok"' || fail "boot 2: the report is not ok"
grep -a '^VM-CHECK bootlace-agent' "$work/check-2.log" | grep -q 'active status=.*vm-1' || fail "boot 2: the agent was not active"

echo "vm-test: evidence"
cat "$work/check-1.log" "$work/check-2.log" | sed 's/^/  /'
echo "  init log: $(off_image /var/log/vm-init.log | tr '\n' ';')"
echo "vm-test: ok: boot 1 $((t1 - t0)) s, boot 2 $((t2 - t1)) s, $(( $(date +%s) - started )) s in all"
