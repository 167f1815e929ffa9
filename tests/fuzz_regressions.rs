//! The fuzz targets' code paths (fuzz/fuzz_targets/, `bash tools/fuzz.sh`)
//! on the committed seed corpus and on every input a fuzz run found:
//! each must give a result or an error, never a panic. The valid seeds
//! must load, so that the fuzzer starts from inputs that reach deep.

use mlrpl_engine::clip::tokenizer::Tokenizer;
use mlrpl_engine::clip::Clip;
use mlrpl_engine::data::coco::{CocoDataset, CocoSplit};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::image::{decode_rgb, preprocess, Preprocess};
use mlrpl_engine::data::list::{ListDataset, OpenOptions};
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::{DType, Device};
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seed for {target}");
    seeds
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-fuzz-regressions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

// The targets, as in fuzz/fuzz_targets/ (a result or an error, no panic).

fn weights(data: &[u8]) -> Option<Clip> {
    let w = WeightMap::from_bytes(data, Path::new("fuzz.safetensors"), &Device::Cpu, DType::F32).ok()?;
    Clip::from_weights(w).ok()
}

fn coco(data: &[u8]) -> Option<CocoDataset> {
    let root = scratch("coco");
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    std::fs::create_dir_all(root.join("train2014")).unwrap();
    std::fs::write(root.join("train2014/a.jpg"), b"").unwrap();
    std::fs::write(root.join("annotations/instances_train2014.json"), data).unwrap();
    CocoDataset::open(&root, CocoSplit::Train2014, &OpenOptions { skip_missing_images: true }).ok()
}

fn voc(data: &[u8]) -> Option<Vec<(bool, bool)>> {
    let path = scratch("voc.xml");
    std::fs::write(&path, data).unwrap();
    mlrpl_engine::data::voc::read_annotation(&path).ok()
}

fn list(data: &[u8]) -> Option<ListDataset> {
    let (&mode, body) = data.split_first()?;
    let path = scratch(if mode % 2 == 0 { "list.csv" } else { "list.json" });
    std::fs::write(&path, body).unwrap();
    std::fs::write(path.with_file_name("a.png"), b"").unwrap();
    let classes = (mode & 2 != 0).then(|| vec!["cat".to_string(), "dog".to_string()]);
    ListDataset::open(&path, classes, &OpenOptions { skip_missing_images: mode & 4 != 0 }).ok()
}

fn label_mask(data: &[u8]) -> Option<LabelMask> {
    let path = scratch("mask.json");
    std::fs::write(&path, data).unwrap();
    let header: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let dim = |key: &str| header.as_ref().and_then(|h| h[key].as_u64()).unwrap_or(4) as usize;
    LabelMask::load(&path, dim("num_items"), dim("num_classes")).ok()
}

fn tokenizer(data: &[u8]) -> Vec<u32> {
    let tokenizer = Tokenizer::shared().unwrap();
    let ids = tokenizer.encode(&String::from_utf8_lossy(data));
    assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
    ids
}

fn image(data: &[u8]) -> Option<usize> {
    let img = decode_rgb(data).ok()?;
    let values = preprocess(&img, Preprocess::ClipCenterCrop { size: 7 });
    assert!(values.len() == 3 * 49 && values.iter().all(|v| v.is_finite()));
    Some(values.len())
}

#[test]
fn the_weight_seeds_are_clips_and_damaged_ones_are_errors() {
    for (name, data) in corpus("weights") {
        let clip = weights(&data);
        if name.starts_with("micro-clip") {
            let clip = clip.unwrap_or_else(|| panic!("seed {name} does not load"));
            assert_eq!(clip.config.vision.grid, 2);
        }
        // Every truncation is an error, not a panic.
        for cut in [0, 1, 8, data.len() / 2, data.len().saturating_sub(1)] {
            assert!(weights(&data[..cut]).is_none(), "{name} cut at {cut} loads");
        }
    }
}

#[test]
fn the_dataset_seeds_load() {
    for (name, data) in corpus("coco_json") {
        let set = coco(&data).unwrap_or_else(|| panic!("coco seed {name}"));
        assert_eq!(set.class_names().len(), 80);
    }
    for (name, data) in corpus("voc_xml") {
        assert!(voc(&data).is_some(), "voc seed {name}");
    }
    for (name, data) in corpus("list") {
        // The seeds name images that do not exist; with the skip bit they load.
        let mut skipping = data.clone();
        skipping[0] |= 4;
        assert!(list(&skipping).is_some() || list(&data).is_some(), "list seed {name}");
    }
    for (name, data) in corpus("label_mask") {
        let mask = label_mask(&data).unwrap_or_else(|| panic!("label mask seed {name}"));
        assert_eq!(mask.num_kept(), 6);
    }
}

#[test]
fn the_text_and_image_seeds_go_through() {
    for (_, data) in corpus("tokenizer") {
        tokenizer(&data);
    }
    for (name, data) in corpus("image") {
        assert!(image(&data).is_some(), "image seed {name}");
    }
}

/// A PNG whose header claims 100000 x 100000 RGB pixels (30 GB decoded):
/// an error from the decoder's allocation limit, not an abort.
#[test]
fn a_png_claiming_a_huge_size_is_an_error() {
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
        out
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    let err = decode_rgb(&png).err().map(|e| format!("{e:#}"));
    assert!(err.as_deref().is_some_and(|e| e.contains("PNG")), "{err:?}");
    assert!(image(&png).is_none());
}
