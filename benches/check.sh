#!/usr/bin/env bash
# Benchmark: `passthru check --json` against libvirt's `virt-host-validate qemu` on
# this machine (its own `/`, read as it is). virt-host-validate checks a subset of
# what check does (CPU virtualization, /dev/kvm, the IOMMU, cgroups); check also
# reads the kernel log, the kernel's configuration and modules, the IOMMU groups, the
# CPU topology, hugepages and the QEMU, OVMF, libvirt and swtpm installations.
# Both exit non-zero when they find a problem, which is ignored here (-i).
# Run it as root, as the tools are run: the kernel log is root's only.
# Needs hyperfine and virt-host-validate (apt-get install hyperfine
# libvirt-daemon-common; Debian 12 has it in libvirt-clients); installs nothing.
# Usage: benches/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine virt-host-validate python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "benches/check.sh: needs $tool (see the comment at the top)" >&2
        exit 2
    fi
done
cargo build --release --quiet --bin passthru
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/passthru
out=$target/bench
mkdir -p "$out"

hyperfine -N -i --warmup 5 --min-runs 50 --export-json "$out/check.json" \
    -n "passthru check --json" "$bin check --json" \
    -n "virt-host-validate qemu" "virt-host-validate qemu"

# One table: median times (robust when the machine is shared) and how many times
# slower than passthru.
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = json.load(open(f"{out}/check.json"))["results"]
base = rows[0]["median"]
print("\nthis machine:")
for r in rows:
    print(f"  {r['command']:<26} {r['median']*1000:9.1f} ms  {r['median']/base:6.1f}x")
PY
