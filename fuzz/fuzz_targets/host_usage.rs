//! What the host uses: `/proc/self/mountinfo`, `/proc/swaps` and the routing tables
//! (`/proc/net/route`, `/proc/net/ipv6_route`), whose paths carry the kernel's octal
//! escapes (`\040` for a space).
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::host::usage::{parse_default_routes_v4, parse_default_routes_v6, parse_root_mount};
use passthru::host::mounts::{parse_mountinfo, parse_swaps, unescape};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    for m in parse_mountinfo(text) {
        // Each mount is one line of the table, its unescaped fields no longer than it.
        assert!(lines.contains(&m.line.as_str()), "{m:?}");
        for field in [&m.root, &m.mount_point, &m.fs_type, &m.source] {
            assert!(field.len() <= m.line.len(), "{m:?}");
        }
    }
    for s in parse_swaps(text) {
        assert!(s.filename != "Filename", "the header is no swap area");
        assert!(lines.iter().any(|l| l.trim_end() == s.line), "{s:?}");
        assert!(s.filename.len() <= s.line.len());
    }
    // An escape is four bytes for one: unescaping never makes a path longer.
    assert!(unescape(text).len() <= text.len());
    if let Some(root) = parse_root_mount(text) {
        let _ = format!("{root:?}");
    }
    for r in parse_default_routes_v4(text)
        .into_iter()
        .chain(parse_default_routes_v6(text))
    {
        assert!(lines.contains(&r.line), "{r:?}");
        assert!(r.line.contains(r.interface), "{r:?}");
    }
});
