//! `/proc/PID/stat`, whose command name (in parentheses) may hold anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::apply::enable::parse_stat;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((_pgrp, state, _start)) = parse_stat(text) {
        assert!(!state.is_whitespace());
        // Whatever follows the last ')' decides: the name cannot change the fields.
        let at = text.rfind(')').expect("a name");
        let renamed = format!("1 (x){}", &text[at + 1..]);
        assert_eq!(parse_stat(&renamed), parse_stat(text));
    }
});
