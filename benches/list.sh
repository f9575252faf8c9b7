#!/usr/bin/env bash
# Benchmark: `passthru list --json` against what users run otherwise, on the same
# generated trees (a desktop-sized host, and an SR-IOV-like host with 4096 functions):
#   - lspci -nnk reading the tree through its linux-sysfs backend;
#   - the usual shell loop over /sys/kernel/iommu_groups calling lspci per device.
# Needs hyperfine and pciutils (apt-get install hyperfine pciutils); installs nothing.
# Usage: benches/list.sh [N]   (N = SR-IOV functions, default 4096)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine lspci python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "benches/list.sh: needs $tool (see the comment at the top)" >&2
        exit 2
    fi
done
n=${1:-4096}
cargo build --release --quiet --bin passthru --example gen_pci_tree
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/passthru
gen=$target/release/examples/gen_pci_tree
out=$target/bench
mkdir -p "$out"
"$gen" "$out/desktop" desktop
"$gen" "$out/sriov" sriov "$n"

# The loop from the usual passthrough guides, pointed at the tree.
cat > "$out/groups-loop.sh" <<'LOOP'
root=$1
shopt -s nullglob
for g in $(find "$root"/sys/kernel/iommu_groups/* -maxdepth 0 -type d | sort -V); do
    echo "IOMMU Group ${g##*/}:"
    for d in "$g"/devices/*; do
        echo -e "\t$(lspci -A linux-sysfs -O sysfs.path="$root/sys/bus/pci" -nns "${d##*/}")"
    done
done
LOOP

# The shell loop runs lspci once per device, so on the large tree it is measured
# with a single run.
for tree in desktop sriov; do
    root="$out/$tree"
    loop_runs=10
    [ "$tree" = sriov ] && loop_runs=1
    hyperfine -N --warmup 3 --export-json "$out/$tree-tools.json" \
        -n "passthru list --json" "$bin list --json --root $root" \
        -n "lspci -nnk" "lspci -nnk -A linux-sysfs -O sysfs.path=$root/sys/bus/pci"
    hyperfine --runs "$loop_runs" --export-json "$out/$tree-loop.json" \
        -n "shell loop + lspci -nns" "bash $out/groups-loop.sh $root"
done

# One table: median times (robust when the machine is shared) and how many times
# slower than passthru.
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for tree in ("desktop", "sriov"):
    rows = []
    for part in ("tools", "loop"):
        rows += json.load(open(f"{out}/{tree}-{part}.json"))["results"]
    base = rows[0]["median"]
    print(f"\n{tree}:")
    for r in rows:
        print(f"  {r['command']:<26} {r['median']*1000:9.1f} ms  {r['median']/base:6.1f}x")
PY
