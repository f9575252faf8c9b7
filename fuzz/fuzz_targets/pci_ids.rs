//! pci.ids (the vendor, device, subsystem and class names): every name found is
//! text of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::pci::names::parse_pci_ids;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ids = parse_pci_ids(text);
    let within = |s: &str| {
        let start = s.as_ptr() as usize;
        let base = text.as_ptr() as usize;
        assert!(
            start >= base && start + s.len() <= base + text.len(),
            "{s:?} not borrowed"
        );
    };
    if let Some(v) = ids.version {
        within(v);
    }
    // Look up the ids the text itself names (the first hex digits of its lines).
    for line in text.lines().take(64) {
        let digits = line.trim_start_matches(['\t', 'C', ' ']);
        let n = |from: usize| {
            digits
                .get(from..from + 4)
                .and_then(|h| u16::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        };
        let (a, b) = (n(0), n(5));
        for name in [
            ids.vendor(a),
            ids.device(a, b),
            ids.subsystem(a, b, a, b),
            ids.class(a as u8, (a >> 8) as u8),
        ]
        .into_iter()
        .flatten()
        {
            within(name);
        }
    }
});
