//! What `vm run` plans before it acts: the affinity of QEMU's threads and swtpm's
//! command line. Pure: [`crate::apply::vm_session`] carries the run out (starts
//! swtpm and QEMU, binds the devices, pins the threads, and undoes it all).

use std::collections::{BTreeMap, BTreeSet};

use super::plan::VmPlan;
use super::qmp::VcpuThread;
use crate::host::cpu::format_cpu_list;

// ---------------------------------------------------------------------------------------
// Pinning.

/// Which thread goes where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPlan {
    /// Thread id → the host CPUs it may run on.
    pub threads: BTreeMap<i32, Vec<u32>>,
    /// The plan in words, for the progress line.
    pub summary: String,
}

/// Decides the affinity of QEMU's threads: each vCPU thread to its host CPU
/// (`vcpus`: vCPU → host CPU from the plan), every other thread of QEMU (`tasks`) to
/// the emulator CPUs. Refuses, with the reason, when a planned CPU is not online or
/// not allowed to passthru (a cpuset or `taskset` restricting it).
pub fn pin_plan(
    vcpus: &[(u32, u32)],
    emulator: &[u32],
    threads: &[VcpuThread],
    tasks: &[i32],
    online: &[u32],
    allowed: &[u32],
) -> Result<PinPlan, String> {
    let usable: BTreeSet<u32> = online
        .iter()
        .filter(|c| allowed.contains(c))
        .copied()
        .collect();
    let wanted: BTreeSet<u32> = vcpus
        .iter()
        .map(|(_, h)| *h)
        .chain(emulator.iter().copied())
        .collect();
    let missing: Vec<u32> = wanted.difference(&usable).copied().collect();
    if !missing.is_empty() {
        return Err(format!(
            "CPUs {} of the plan are not online or not allowed to passthru (usable: {})",
            format_cpu_list(&missing),
            format_cpu_list(&usable.iter().copied().collect::<Vec<_>>())
        ));
    }
    let by_vcpu: BTreeMap<u32, u32> = vcpus.iter().copied().collect();
    let mut out: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    let mut words = Vec::new();
    let vcpu_tids: BTreeSet<i32> = threads.iter().map(|t| t.thread_id).collect();
    if vcpu_tids.len() < threads.len() {
        return Err(
            "the vCPUs share one thread (TCG without multi-threading): there is nothing to pin per vCPU"
                .into(),
        );
    }
    for t in threads {
        let Some(host) = by_vcpu.get(&t.index) else {
            return Err(format!(
                "QEMU has a vCPU {} the plan does not know",
                t.index
            ));
        };
        out.insert(t.thread_id, vec![*host]);
        words.push(format!(
            "vCPU {} (thread {}) → CPU {host}",
            t.index, t.thread_id
        ));
    }
    let others: Vec<i32> = tasks
        .iter()
        .filter(|t| !vcpu_tids.contains(t))
        .copied()
        .collect();
    if !emulator.is_empty() && !others.is_empty() {
        for t in &others {
            out.insert(*t, emulator.to_vec());
        }
        words.push(format!(
            "QEMU's {} other thread(s) → CPUs {}",
            others.len(),
            format_cpu_list(emulator)
        ));
    }
    Ok(PinPlan {
        threads: out,
        summary: words.join(", "),
    })
}

// ---------------------------------------------------------------------------------------
// swtpm.

/// swtpm's argv for the plan's TPM: a TPM 2.0 whose state lives in the VM's
/// directory, reached by QEMU on the control socket; `--terminate` ends it when QEMU
/// disconnects.
pub fn swtpm_argv(plan: &VmPlan) -> Vec<String> {
    vec![
        "swtpm".into(),
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", plan.tpm_state_dir().display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", plan.swtpm_path().display()),
        "--log".into(),
        format!("file={}", plan.state_dir.join("swtpm.log").display()),
        "--terminate".into(),
    ]
}

/// Why swtpm cannot take the VM's state directory, if it cannot: swtpm's options
/// (`dir=…,` `path=…`) are split at every comma, with no way to escape one.
pub fn swtpm_blocker(plan: &VmPlan) -> Option<String> {
    let dir = plan.state_dir.display().to_string();
    (plan.spec.firmware.tpm && dir.contains(',')).then(|| {
        format!(
            "the VM's state directory {dir} has a ',' in its path, which swtpm cannot take \
             (set PASSTHRU_VM_STATE_DIR to a directory without one)"
        )
    })
}

/// A plan of one vCPU on host CPU 1 (emulator on CPU 0), TCG, no devices, its state
/// in `state`: for the tests of the planning and of the session.
#[cfg(test)]
pub(crate) fn test_plan(spec: crate::vm::spec::VmSpec, state: &std::path::Path) -> VmPlan {
    VmPlan {
        boot_iso_first: true,
        spec,
        pinning: crate::vm::pinning::PinningPlan {
            vcpus: vec![(0, 1)],
            emulator: vec![0],
            host_keeps: vec![0],
            sockets: 1,
            cores: 1,
            threads: 1,
            numa_node: None,
            reasons: Vec::new(),
        },
        devices: Vec::new(),
        roms: BTreeMap::new(),
        amd: false,
        accel: crate::vm::plan::Accel::Tcg,
        ovmf: None,
        hugepage_kib: None,
        state_dir: state.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn t(index: u32, thread_id: i32) -> VcpuThread {
        VcpuThread { index, thread_id }
    }

    #[test]
    fn pins_vcpus_to_their_cpus_and_the_rest_to_the_emulator_cpus() {
        // 4 vCPUs on the cores 2-3 and 4-5 siblings, emulator on the host's core 0,1.
        let vcpus = [(0, 2), (1, 3), (2, 4), (3, 5)];
        let threads = [t(0, 101), t(1, 102), t(2, 103), t(3, 104)];
        let tasks = [100, 101, 102, 103, 104, 105, 106];
        let all: Vec<u32> = (0..8).collect();
        let p = pin_plan(&vcpus, &[0, 1], &threads, &tasks, &all, &all).unwrap();
        assert_eq!(p.threads[&101], [2]);
        assert_eq!(p.threads[&104], [5]);
        assert_eq!(p.threads[&100], [0, 1]);
        assert_eq!(p.threads[&106], [0, 1]);
        assert_eq!(p.threads.len(), 7);
        assert_eq!(
            p.summary,
            "vCPU 0 (thread 101) → CPU 2, vCPU 1 (thread 102) → CPU 3, vCPU 2 (thread 103) → CPU 4, \
             vCPU 3 (thread 104) → CPU 5, QEMU's 3 other thread(s) → CPUs 0-1"
        );
    }

    #[test]
    fn refuses_cpus_that_are_offline_or_not_allowed() {
        let all: Vec<u32> = (0..4).collect();
        // CPU 3 offline.
        let err = pin_plan(&[(0, 3)], &[0], &[t(0, 11)], &[10, 11], &[0, 1, 2], &all).unwrap_err();
        assert!(err.contains("CPUs 3 of the plan"), "{err}");
        // passthru itself restricted to CPUs 0-1 (taskset, a cgroup cpuset).
        let err = pin_plan(&[(0, 2)], &[0], &[t(0, 11)], &[10, 11], &all, &[0, 1]).unwrap_err();
        assert!(err.contains("usable: 0-1"), "{err}");
        // Single-threaded TCG: every vCPU on one thread.
        let err = pin_plan(
            &[(0, 2), (1, 3)],
            &[0],
            &[t(0, 11), t(1, 11)],
            &[10, 11],
            &all,
            &all,
        )
        .unwrap_err();
        assert!(err.contains("share one thread"), "{err}");
    }

    #[test]
    fn an_empty_emulator_set_leaves_other_threads_alone() {
        let all: Vec<u32> = (0..2).collect();
        let p = pin_plan(&[(0, 1)], &[], &[t(0, 11)], &[10, 11], &all, &all).unwrap();
        assert_eq!(p.threads.len(), 1);
        assert_eq!(p.threads[&11], [1]);
    }

    #[test]
    fn swtpm_keeps_its_state_in_the_vms_directory() {
        let spec = crate::vm::spec::VmSpec::parse(
            "name = \"w\"\nmemory = \"1G\"\ncpus = 2\n[firmware]\ntpm = true\n",
        )
        .unwrap();
        let plan = test_plan(spec, Path::new("/var/lib/passthru/vms/w"));
        assert_eq!(
            swtpm_argv(&plan).join(" "),
            "swtpm socket --tpm2 --tpmstate dir=/var/lib/passthru/vms/w/tpm \
             --ctrl type=unixio,path=/var/lib/passthru/vms/w/swtpm.sock \
             --log file=/var/lib/passthru/vms/w/swtpm.log --terminate"
        );
    }
}
