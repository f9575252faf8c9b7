//! QMP replies from QEMU (one JSON object per line), and the vCPU threads of
//! `query-cpus-fast`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::vm::qmp::{parse_message, parse_vcpus, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        match parse_message(line) {
            Ok(Message::Return(ret)) => {
                if let Ok(vcpus) = parse_vcpus(&ret) {
                    assert!(vcpus.windows(2).all(|w| w[0].index <= w[1].index));
                }
            }
            Ok(Message::Greeting(v)) => assert!(v.split('.').count() == 3, "{v}"),
            Ok(_) | Err(_) => {}
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = parse_vcpus(&v);
    }
});
