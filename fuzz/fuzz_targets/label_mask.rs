//! The label-mask reader, asked for the shape its header claims (so that
//! the checks after the shape run too), then every kept bit read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlrpl_engine::data::partial::LabelMask;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("mlrpl-fuzz-mask-{}.json", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let header: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let dim = |key: &str| header.as_ref().and_then(|h| h[key].as_u64()).unwrap_or(4) as usize;
    if let Ok(mask) = LabelMask::load(&path, dim("num_items"), dim("num_classes")) {
        let kept: usize = (0..mask.num_items())
            .flat_map(|i| (0..mask.num_classes()).map(move |c| (i, c)))
            .filter(|&(i, c)| mask.is_kept(i, c))
            .count();
        assert_eq!(kept, mask.num_kept());
    }
});
