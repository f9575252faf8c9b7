#!/bin/busybox sh
# PID 1 of a Debian testbed guest, installed as /usr/local/sbin/testbed-init in the Debian
# root (see tests/testbed/debian.rs) and started with `init=` by the root's OWN initramfs,
# after that initramfs mounted /dev/vda as `/`. So everything before this script — the
# modules of /etc/initramfs-tools/modules, the options of /etc/modprobe.d, vfio-pci taking
# a device from boot — is the root's own configuration at work, as on a real boot.
#
# It stands in for systemd, minimally: it never loads VFIO modules itself. It mounts
# what is not mounted yet, loads the 9p modules from the root's own module tree, mounts
# the shared directory (9p tag `testbed`) at /tmp/testbed, loads the drivers of the PCI
# devices like udev's coldplug would, and serves commands with the protocol of init.sh:
#   host writes  N.sh (the script) then N.go (its timeout in seconds)
#   guest writes N.out, N.err, N.timedout (if killed) and, last, N.rc (exit status)
# and one more request: a file `poweroff` makes it sync, remount `/` read-only (ext4
# checkpoints its journal, so the host can read the image with debugfs) and power off.
# Every step is logged to the console with the prefix "testbed:".

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox

say() { echo "testbed: $*"; }
fail() { say "FATAL: $*"; sleep 1; $bb poweroff -f; }

# The initramfs moved /dev, /proc, /sys and /run here; mount what is missing.
mountpoint -q /proc || mount -t proc proc /proc || fail "proc"
mountpoint -q /sys || mount -t sysfs sysfs /sys || fail "sysfs"
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev || fail "dev"
mountpoint -q /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "run"
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
# GRUB's arguments say `ro` (systemd would remount it from fstab): writable, always.
mount -o remount,rw / || fail "remount / read-write"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "tmp"

for m in virtio_pci 9pnet_virtio 9p; do
    modprobe "$m" || fail "modprobe $m"
done
mkdir -p /tmp/testbed
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 testbed /tmp/testbed \
    || fail "mount of the shared directory (9p tag testbed)"
say "root ready: $(uname -r) on $(findmnt -n -o SOURCE /)"

# Coldplug: what udev does at boot, with the root's own modprobe and modprobe.d.
for f in /sys/bus/pci/devices/*/modalias; do modprobe -q -b "$(cat "$f")"; done
say "drivers loaded"

cd /tmp/testbed || fail "cd shared"
echo ok > ready.tmp && mv ready.tmp ready
say "ready"

n=0
idle=0
while :; do
    if [ -e poweroff ]; then
        say "powering off"
        cd /
        sync
        umount /tmp/testbed 2>/dev/null
        mount -o remount,ro / || say "remount / read-only failed"
        sync
        $bb poweroff -f
    fi
    if [ ! -e "$n.go" ]; then
        if [ "$idle" -lt 40 ]; then
            idle=$((idle + 1))
            sleep 0.05
        else
            sleep 0.25
        fi
        continue
    fi
    idle=0
    t=$(cat "$n.go")
    setsid /bin/sh -c "cd / && exec /bin/sh /tmp/testbed/$n.sh" \
        <"/dev/null" >"$n.out" 2>"$n.err" &
    pid=$!
    setsid $bb sh -c 'sleep "$1"; echo "$1" > "$2.timedout"; kill -KILL -- "-$3"' \
        watchdog "$t" "$n" "$pid" </dev/null >/dev/null 2>&1 &
    wd=$!
    wait "$pid"
    rc=$?
    $bb kill -KILL -- "-$wd" 2>/dev/null
    echo "$rc" > "$n.rc.tmp" && mv "$n.rc.tmp" "$n.rc"
    n=$((n + 1))
done
