//! PCI addresses as users write them (`01:00.0`, `0000:01:00.0`): an address prints
//! as text that parses to the same address, and never longer than the kernel's form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::pci::PciAddress;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 7 {
        // Any address at all, from raw bytes.
        let domain = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if let Some(a) = PciAddress::new(domain, data[4], data[5], data[6]) {
            assert_eq!(a.to_string().parse::<PciAddress>(), Ok(a));
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(a) = text.parse::<PciAddress>() else {
        return;
    };
    assert!(a.device < 32 && a.function < 8, "{a:?} from {text:?}");
    let shown = a.to_string();
    assert_eq!(
        shown.parse::<PciAddress>(),
        Ok(a),
        "{text:?} shown as {shown}"
    );
    assert_eq!(format!("{}.{:x}", a.slot(), a.function), shown);
    assert_eq!(a.function0().function, 0);
    assert!(a.same_slot(a.function0()));
});
