#!/bin/busybox sh
# /init of the test installer (passthru.stage=install, booted from the ISO) and of
# the system it installs (passthru.stage=disk, booted from the disk by OVMF and the
# disk's own GRUB). Markers go to fixed offsets of the disk, which the test reads
# back from the qcow2 image after the VM powered off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stage=$(sed -n 's/.*passthru\.stage=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "passthru-test: stage '$stage'"
modprobe virtio_pci
modprobe virtio_blk
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -b /dev/vda ]; then
    echo "passthru-test: no /dev/vda"
    ls /sys/class/block
else
    case "$stage" in
    install)
        # The installed system: a GPT disk with an EFI system partition.
        gunzip -c /disk.img.gz | dd of=/dev/vda bs=1M 2>/dev/null
        echo PASSTHRU-INSTALLED | dd of=/dev/vda bs=1M seek=200 2>/dev/null
        echo "passthru-test: installed"
        ;;
    disk)
        if dd if=/dev/vda bs=1M skip=200 count=1 2>/dev/null | head -c 64 | grep -q PASSTHRU-INSTALLED; then
            echo PASSTHRU-BOOTED-FROM-DISK | dd of=/dev/vda bs=1M seek=201 2>/dev/null
            echo "passthru-test: booted from the installed disk"
        else
            echo "passthru-test: no install marker on /dev/vda"
        fi
        ;;
    *)
        echo "passthru-test: unknown stage"
        ;;
    esac
fi
sync
echo "passthru-test: powering off"
poweroff -f
