//! The kernel log: `/dev/kmsg` records (`prio,seq,usec,-;text`) and `dmesg` text
//! lines, and what the IOMMU checks read from them (the DMAR/IVRS table lines,
//! VT-d/AMD-Vi messages).
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::iommu::IommuLog;
use passthru::host::kernel::log::KernelLog;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let log = KernelLog::parse(text);
    // At most one message per input line, and no message longer than its line:
    // prefixes are dropped and `\xNN` escapes only shrink.
    assert!(log.lines.len() <= text.lines().count());
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    for line in &log.lines {
        assert!(
            line.text.len() <= longest,
            "{line:?} is longer than its line"
        );
        if let Some(t) = line.time {
            assert!(t.is_finite() && t >= 0.0, "time {t} from {text:?}");
        }
        let _ = line.display();
    }
    let _ = IommuLog::analyse(&log);
    let _ = log.find("DMAR");
});
