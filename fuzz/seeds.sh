#!/usr/bin/env bash
# Builds the fuzz targets' seed corpora in fuzz/corpus/TARGET from the real texts the
# tests use: the fixture roots under tests/fixtures, the raw strings of the unit and
# render tests, and the few seeds committed in fuzz/seeds/TARGET (texts no fixture
# holds: QMP replies, /proc/PID/stat, device arguments). Where this machine has the
# real program or file (QEMU, pci.ids), its output is added too.
#
# Usage: fuzz/seeds.sh [TARGET...]   (no target: all of them)
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../tests/fixtures

# put TARGET FILE...: copies each file that exists into the target's corpus, named by
# its content's hash (libFuzzer's own naming), so runs do not duplicate them.
put() {
    local target=$1 f sum
    shift
    mkdir -p "corpus/$target"
    for f in "$@"; do
        [ -f "$f" ] || continue
        sum=$(sha1sum <"$f" | cut -d' ' -f1)
        cp "$f" "corpus/$target/$sum"
    done
}

# put_text TARGET: the standard input as one seed.
put_text() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    put "$1" "$tmp"
    rm -f "$tmp"
}

# raw_strings TARGET RUST-FILE: every `const NAME: &str = r#"…"#;` of the file.
raw_strings() {
    local target=$1 file=$2 tmp
    tmp=$(mktemp -d)
    awk -v dir="$tmp" '
        !on && /const [A-Z0-9_]+: &str = r#"/ {
            n++; out = dir "/" n
            rest = substr($0, index($0, "r#\"") + 3)
            if ((end = index(rest, "\"#")) > 0) { printf "%s", substr(rest, 1, end - 1) > out; close(out); next }
            printf "%s\n", rest > out; on = 1; next
        }
        on {
            if ((end = index($0, "\"#")) > 0) { printf "%s", substr($0, 1, end - 1) > out; close(out); on = 0 }
            else printf "%s\n", $0 > out
        }' "$file"
    put "$target" "$tmp"/*
    rm -rf "$tmp"
}

selected="$*"

for t in kernel_log cmdline kernel_config modules cpuinfo cpu_list grub_default loader_entry \
    kernelstub booster mkinitcpio modprobe_d vm_spec pci_address device_target qmp proc_stat \
    pci_ids qemu_help os_release_meminfo libvirt_output host_usage; do
    if [ -n "$selected" ] && [[ " $selected " != *" $t "* ]]; then
        continue
    fi
    if [ -d "seeds/$t" ]; then put "$t" "seeds/$t"/*; fi
    case $t in
    kernel_log) put "$t" "$fixtures"/*/root/dev/kmsg ;;
    cmdline) put "$t" "$fixtures"/*/root/proc/cmdline "$fixtures"/*/root/etc/kernel/cmdline ;;
    kernel_config)
        put "$t" "$fixtures"/*/root/boot/config-*
        for z in "$fixtures"/*/root/proc/config.gz; do
            if [ -f "$z" ]; then gzip -dc "$z" | put_text "$t"; fi
        done
        ;;
    modules)
        for d in "$fixtures"/*/root/lib/modules/* "$fixtures"/*/root/usr/lib/modules/*; do
            [ -d "$d" ] || continue
            { cat "$d/modules.builtin" 2>/dev/null || true; printf '\0'; cat "$d/modules.dep" 2>/dev/null || true; } | put_text "$t"
        done
        ;;
    cpuinfo) put "$t" "$fixtures"/*/root/proc/cpuinfo ;;
    grub_default) put "$t" "$fixtures"/*/root/etc/default/grub ;;
    loader_entry)
        put "$t" "$fixtures"/*/root/boot/loader/entries/*.conf "$fixtures"/*/root/boot/efi/loader/entries/*.conf
        ;;
    kernelstub) put "$t" "$fixtures"/*/root/etc/kernelstub/configuration ;;
    booster) put "$t" "$fixtures"/*/root/etc/booster.yaml ;;
    mkinitcpio) put "$t" "$fixtures"/*/root/etc/mkinitcpio.conf ;;
    modprobe_d)
        put "$t" "$fixtures"/*/root/etc/modprobe.d/*.conf "$fixtures"/*/root/lib/modprobe.d/*.conf \
            "$fixtures"/*/root/lib/modules/*/modules.softdep
        ;;
    vm_spec)
        raw_strings "$t" ../tests/vm_render.rs
        raw_strings "$t" ../src/vm/spec.rs
        raw_strings "$t" ../src/vm/check.rs
        ;;
    pci_address | device_target)
        for f in "$fixtures"/*/pci.tsv; do
            [ -f "$f" ] || continue
            awk '!/^#/ { print $1 }' "$f" | head -n 3 | while read -r a; do printf '%s' "$a" | put_text "$t"; done
        done
        ;;
    qmp) raw_strings "$t" ../src/vm/qmp.rs ;;
    pci_ids)
        for f in /usr/share/misc/pci.ids /usr/share/hwdata/pci.ids; do
            if [ -f "$f" ]; then head -n 2000 "$f" | put_text "$t"; fi
        done
        ;;
    qemu_help)
        raw_strings "$t" ../src/vm/qemu.rs
        raw_strings "$t" ../src/vm/check.rs
        if command -v qemu-system-x86_64 >/dev/null; then
            # QEMU answers `help` with exit status 1 on some versions: keep the text.
            (qemu-system-x86_64 --version || true) | put_text "$t"
            (qemu-system-x86_64 -device help 2>&1 || true) | awk 'NR <= 80' | put_text "$t"
            (qemu-system-x86_64 -netdev help 2>&1 || true) | put_text "$t"
            (qemu-system-x86_64 -tpmdev help 2>&1 || true) | put_text "$t"
        fi
        ;;
    os_release_meminfo) put "$t" "$fixtures"/*/root/etc/os-release "$fixtures"/*/root/proc/meminfo ;;
    libvirt_output) put "$t" ../tests/golden/vm/*.xml ;;
    host_usage)
        put "$t" "$fixtures"/*/root/proc/self/mountinfo "$fixtures"/*/root/proc/swaps \
            "$fixtures"/*/root/proc/net/route "$fixtures"/*/root/proc/net/ipv6_route
        [ -r /proc/self/mountinfo ] && put_text "$t" </proc/self/mountinfo
        ;;
    esac
    echo "$t: $(find "corpus/$t" -type f 2>/dev/null | wc -l) seeds"
done
