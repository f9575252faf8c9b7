//! The VM spec (TOML): a spec that parses and validates serialises back to TOML that
//! parses to the same spec; sizes and ID pairs re-parse from what they print.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::vm::spec::{parse_mib, IdPair, VmSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(mib) = parse_mib(text) {
        assert!(mib > 0);
        assert_eq!(parse_mib(&format!("{mib}M")), Some(mib));
    }
    if let Ok(pair) = text.parse::<IdPair>() {
        assert_eq!(pair.to_string().parse::<IdPair>(), Ok(pair));
    }
    let Ok(spec) = VmSpec::parse(text) else {
        return;
    };
    let written = toml::to_string(&spec).expect("a valid spec serialises");
    let again = VmSpec::parse(&written)
        .unwrap_or_else(|e| panic!("{written:?} (from {text:?}) does not parse: {e}"));
    assert_eq!(again, spec, "{text:?} written as {written:?}");
});
