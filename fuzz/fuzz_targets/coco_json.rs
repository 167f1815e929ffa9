//! COCO's instances JSON, read through `CocoDataset::open` (images may be
//! missing: they are skipped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlrpl_engine::data::coco::{CocoDataset, CocoSplit};
use mlrpl_engine::data::list::OpenOptions;

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("mlrpl-fuzz-coco-{}", std::process::id()));
    let annotations = root.join("annotations");
    std::fs::create_dir_all(&annotations).unwrap();
    // One listed image exists (an empty file: only its presence is checked).
    std::fs::create_dir_all(root.join("train2014")).unwrap();
    std::fs::write(root.join("train2014/a.jpg"), b"").unwrap();
    std::fs::write(annotations.join("instances_train2014.json"), data).unwrap();
    let options = OpenOptions { skip_missing_images: true };
    let _ = CocoDataset::open(&root, CocoSplit::Train2014, &options);
});
