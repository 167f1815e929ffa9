//! One VOC annotation XML file, read as `VocDataset` reads each.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("mlrpl-fuzz-voc-{}.xml", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = mlrpl_engine::data::voc::read_annotation(&path);
});
