//! The CSV and JSON list reader (first byte: even CSV, odd JSON), with and
//! without a class list; listed images may be missing (skipped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::list::{ListDataset, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let ext = if mode % 2 == 0 { "csv" } else { "json" };
    let path = std::env::temp_dir().join(format!("mlrpl-fuzz-list-{}.{ext}", std::process::id()));
    std::fs::write(&path, body).unwrap();
    // One image a list may name exists (only its presence is checked).
    std::fs::write(path.with_file_name("a.png"), b"").unwrap();
    let classes = (mode & 2 != 0).then(|| vec!["cat".to_string(), "dog".to_string()]);
    let options = OpenOptions { skip_missing_images: mode & 4 != 0 };
    if let Ok(set) = ListDataset::open(&path, classes, &options) {
        for i in 0..set.len().min(16) {
            assert_eq!(set.labels(i).len(), set.class_names().len());
        }
    }
});
