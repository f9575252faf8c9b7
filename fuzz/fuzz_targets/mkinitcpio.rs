//! `/etc/mkinitcpio.conf`: `enable`'s edit of the `MODULES=(…)` array (at the front,
//! as VFIO must load before the graphics drivers) and of `HOOKS=(…)` (at the back)
//! lists every item and changes nothing when run again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passthru::plan::enable::edit_bash_array;
use passthru::plan::enable::shell::{assignments, Assigned};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (name, items, front) in [
        (
            "MODULES",
            &["vfio_pci", "vfio", "vfio_iommu_type1"][..],
            true,
        ),
        ("HOOKS", &["modconf"][..], false),
    ] {
        // Refused (a string where an array belongs, a value passthru cannot know):
        // BY HAND.
        let Ok(once) = edit_bash_array(text, name, items, front) else {
            continue;
        };
        // Read back as the shell does: the last `NAME=(…)` and every `NAME+=(…)` after
        // it make the array.
        let list = assignments(&once).expect("its own output is plain assignments");
        let from = list
            .iter()
            .rposition(|a| a.name == name && !a.append)
            .unwrap_or_else(|| panic!("no {name} array in {once:?}"));
        let mut values: Vec<&str> = Vec::new();
        for a in list[from..].iter().filter(|a| a.name == name) {
            let Assigned::Array { words, .. } = &a.value else {
                panic!("{name} is no array in {once:?}");
            };
            values.extend(words.iter().filter_map(|w| w.value.as_deref().ok()));
        }
        for it in items {
            assert!(values.contains(it), "{it} missing from {values:?}");
        }
        assert_eq!(
            edit_bash_array(&once, name, items, front).expect("its own output is editable"),
            once,
            "not idempotent: {text:?}"
        );
    }
});
