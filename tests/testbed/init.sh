#!/bin/busybox sh
# PID 1 of a testbed guest (see tests/testbed/kernel.rs, which packs this file as /init).
#
# It mounts the host's `/` (9p tag `hostroot`, read-only) under an overlay whose upper
# layers are the unpacked Debian kernel (9p tag `kernel`: its /boot and modules, so
# `uname -r` matches /lib/modules) and a tmpfs (so the guest may write anywhere without
# touching the host; the host's /tmp stays visible, as a build directory may be there), then
# loads the drivers of the PCI devices like udev's coldplug would, and serves commands
# that the host drops into the shared directory (9p tag `testbed`, read-write):
#   host writes  N.sh (the script) then N.go (its timeout in seconds)
#   guest writes N.out, N.err, N.timedout (if killed) and, last, N.rc (exit status)
# Every step is logged to the console with the prefix "testbed:".

/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "testbed: $*"; }
fail() { say "FATAL: $*"; sleep 1; poweroff -f; }

for m in virtio_pci 9pnet_virtio 9p overlay; do
    modprobe "$m" || fail "modprobe $m"
done

mkdir -p /mnt/host /mnt/kernel /mnt/rw /root
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /mnt/host \
    || fail "mount of the host's / (9p tag hostroot)"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 kernel /mnt/kernel \
    || fail "mount of the kernel tree (9p tag kernel)"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw || fail "tmpfs"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o "lowerdir=/mnt/kernel:/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work" \
    overlay /root || fail "overlay root"

mount -t proc proc /root/proc || fail "proc"
mount -t sysfs sysfs /root/sys || fail "sysfs"
mount --bind /dev /root/dev || fail "dev"
mount -t devpts devpts /root/dev/pts 2>/dev/null
mount -t tmpfs -o mode=0755 tmpfs /root/run || fail "run"
mkdir -p /root/tmp/testbed
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 testbed /root/tmp/testbed \
    || fail "mount of the shared directory (9p tag testbed)"
say "root ready: $(uname -r)"

# Coldplug: what udev does at boot, with the real modprobe (kmod) of the userland.
chroot /root /bin/sh -c 'for f in /sys/bus/pci/devices/*/modalias; do modprobe -q -b "$(cat "$f")"; done'
say "drivers loaded"

cd /root/tmp/testbed || fail "cd shared"
echo ok > ready.tmp && mv ready.tmp ready
say "ready"

# Polling is cheap right after a command (the next one usually follows at once) and
# slower when idle: each poll costs forks, and forks are slow under TCG.
n=0
idle=0
while :; do
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
    setsid chroot /root /bin/sh -c "cd / && exec /bin/sh /tmp/testbed/$n.sh" \
        <"/dev/null" >"$n.out" 2>"$n.err" &
    pid=$!
    # The watchdog has its own process group too, so that killing it also ends its
    # sleep. It writes the marker before the kill: once the command is dead, the loop
    # below kills the watchdog at once.
    setsid sh -c 'sleep "$1"; echo "$1" > "$2.timedout"; kill -KILL -- "-$3"' \
        watchdog "$t" "$n" "$pid" </dev/null >/dev/null 2>&1 &
    wd=$!
    wait "$pid"
    rc=$?
    kill -KILL -- "-$wd" 2>/dev/null
    echo "$rc" > "$n.rc.tmp" && mv "$n.rc.tmp" "$n.rc"
    n=$((n + 1))
done
