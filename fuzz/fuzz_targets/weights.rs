//! The safetensors weight-map loader and CLIP size inference on arbitrary
//! bytes: an error is fine, a panic or an abort is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlrpl_engine::clip::Clip;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::{DType, Device};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(weights) = WeightMap::from_bytes(data, Path::new("fuzz.safetensors"), &Device::Cpu, DType::F32) else {
        return;
    };
    let _ = Clip::from_weights(weights);
});
