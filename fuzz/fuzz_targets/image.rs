//! JPEG/PNG decoding and CLIP's preprocessing (shortest side bicubic, centre
//! crop, mean/std) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlrpl_engine::data::image::{decode_rgb, preprocess, Preprocess};

fuzz_target!(|data: &[u8]| {
    let Ok(image) = decode_rgb(data) else { return };
    for size in [1, 7, 32] {
        let values = preprocess(&image, Preprocess::ClipCenterCrop { size });
        assert_eq!(values.len(), 3 * size * size);
        assert!(values.iter().all(|v| v.is_finite()));
    }
});
