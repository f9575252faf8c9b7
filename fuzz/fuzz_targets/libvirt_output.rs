//! What libvirt and qemu-img print back: `virsh domstate`, virsh's errors, a
//! domain's XML (its `type`, and the `<uuid>` put back into it), and
//! `qemu-img map --output=json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::vm::disk::map_has_data;
use passthru::vm::libvirt::{accel_of_xml, classify, with_uuid, DomainState};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let state = DomainState::parse(text);
    assert_eq!(DomainState::parse(&state.to_string()), state);
    let _ = (state.is_active(), classify(text));
    let _ = accel_of_xml(text);
    let uuid = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0";
    let with = with_uuid(text, uuid);
    if text.contains("</name>") {
        assert!(with.contains(&format!("<uuid>{uuid}</uuid>")));
        assert!(with.len() > text.len());
    } else {
        assert_eq!(with, text);
    }
    let _ = map_has_data(text);
});
