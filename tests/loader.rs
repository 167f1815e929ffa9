//! The batch loader: determinism across worker counts, epoch order,
//! coverage, drop_last, unreadable images, partial labels, augmentation
//! statistics, validation split, and shutdown mid-epoch.

use anyhow::{bail, Result};
use mlrpl_engine::data::augment::{
    augmented_chw, augmented_rgb, cutout_rect, flip_horizontal, item_rng, Augment, CUTOUT_FACTOR,
};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::image::RgbImage;
use mlrpl_engine::data::loader::{epoch_order, split_validation, Batch, Loader, LoaderOptions};
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::data::rand_augment::RandAugment;
use mlrpl_engine::rng::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The training transforms without RandAugment.
const WITH_CUTOUT: Augment = Augment::Train { cutout: true, rand_augment: None };
const FLIP_ONLY: Augment = Augment::Train { cutout: false, rand_augment: None };

/// A generated dataset: item `i` is a `side x side` image whose pixels
/// depend on `i`; items in `bad` fail like a missing file.
struct Tiny {
    classes: Vec<String>,
    labels: Vec<Vec<f32>>,
    bad: HashSet<usize>,
    side: usize,
    delay: Duration,
    calls: AtomicUsize,
}

impl Tiny {
    fn new(n: usize, classes: usize, side: usize, bad: &[usize]) -> Tiny {
        let mut rng = Rng::new(99);
        let labels =
            (0..n).map(|_| (0..classes).map(|_| if rng.uniform() < 0.3 { 1.0 } else { -1.0 }).collect()).collect();
        Tiny {
            classes: (0..classes).map(|c| format!("class{c}")).collect(),
            labels,
            bad: bad.iter().copied().collect(),
            side,
            delay: Duration::ZERO,
            calls: AtomicUsize::new(0),
        }
    }

    fn path(i: usize) -> String {
        format!("/fake/images/img_{i:04}.jpg")
    }
}

impl MultiLabelDataset for Tiny {
    fn describe(&self) -> String {
        "tiny test set".into()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn labels(&self, index: usize) -> &[f32] {
        &self.labels[index]
    }
    fn image(&self, index: usize) -> Result<RgbImage> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if self.bad.contains(&index) {
            bail!("cannot read image {}: file not found", Tiny::path(index));
        }
        let s = self.side;
        let mut data = Vec::with_capacity(s * s * 3);
        for y in 0..s {
            for x in 0..s {
                data.extend_from_slice(&[
                    (index * 13 + x * 7) as u8,
                    (index * 5 + y * 11) as u8,
                    (x * y + index) as u8,
                ]);
            }
        }
        RgbImage::new(s, s, data)
    }
    fn item_name(&self, index: usize) -> String {
        Tiny::path(index)
    }
}

fn options(batch_size: usize, workers: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size,
        shuffle: true,
        seed: 11,
        epoch: 0,
        workers,
        prefetch_batches: 2,
        image_size: 16,
        augment: WITH_CUTOUT,
        drop_last: false,
        label_mask: None,
        skip_bad_images: false,
    }
}

struct Plain {
    images: Vec<f32>,
    labels: Vec<f32>,
    indices: Vec<usize>,
    dims: Vec<usize>,
}

fn plain(b: Batch) -> Plain {
    Plain {
        images: b.images.to_vec().unwrap(),
        labels: b.labels.to_vec().unwrap(),
        indices: b.indices,
        dims: b.images.dims().to_vec(),
    }
}

fn collect(ds: &Arc<Tiny>, indices: Vec<usize>, opts: LoaderOptions) -> Vec<Plain> {
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    Loader::new(dataset, indices, opts).unwrap().map(|b| plain(b.unwrap())).collect()
}

#[test]
fn batches_are_identical_for_any_worker_count() {
    let ds = Arc::new(Tiny::new(37, 5, 20, &[]));
    let all: Vec<usize> = (0..37).collect();
    let one = collect(&ds, all.clone(), options(4, 1));
    for workers in [2, 3, 7] {
        let mut o = options(4, workers);
        o.prefetch_batches = workers % 3; // 0, 1 or 2 waiting batches
        let many = collect(&ds, all.clone(), o);
        assert_eq!(one.len(), many.len());
        for (a, b) in one.iter().zip(&many) {
            assert_eq!(a.indices, b.indices, "workers {workers}");
            assert_eq!(a.labels, b.labels);
            assert!(a.images == b.images, "workers {workers}: images differ");
        }
    }
    // Contents: each item is its own augmentation from (seed, epoch, index).
    let first = &one[0];
    assert_eq!(first.dims, vec![4, 3, 16, 16]);
    for (k, &i) in first.indices.iter().enumerate() {
        let img = ds.image(i).unwrap();
        let want = augmented_chw(&img, 16, WITH_CUTOUT, &mut item_rng(11, 0, i));
        assert!(first.images[k * 768..(k + 1) * 768] == want[..], "item {i}");
        assert_eq!(&first.labels[k * 5..(k + 1) * 5], ds.labels(i));
    }
    // Another epoch augments the same item differently.
    let i = first.indices[0];
    let img = ds.image(i).unwrap();
    let diff = (1..6).any(|e| {
        augmented_chw(&img, 16, WITH_CUTOUT, &mut item_rng(11, e, i))
            != augmented_chw(&img, 16, WITH_CUTOUT, &mut item_rng(11, 0, i))
    });
    assert!(diff);
}

#[test]
fn rand_augment_is_the_same_for_1_and_4_workers_and_runs_after_flip_and_cutout() {
    let ds = Arc::new(Tiny::new(21, 3, 20, &[]));
    let all: Vec<usize> = (0..21).collect();
    let rand_augment = RandAugment::new(2, 9).unwrap();
    let augment = Augment::Train { cutout: true, rand_augment: Some(rand_augment) };
    let run = |workers: usize| {
        let mut o = options(4, workers);
        o.augment = augment;
        collect(&ds, all.clone(), o)
    };
    let (one, four) = (run(1), run(4));
    assert_eq!(one.len(), four.len());
    for (a, b) in one.iter().zip(&four) {
        assert_eq!(a.indices, b.indices);
        assert!(a.images == b.images, "images differ between 1 and 4 workers");
    }
    let per_item = 3 * 16 * 16;
    let mut changed = 0;
    for batch in &one {
        for (k, &i) in batch.indices.iter().enumerate() {
            let img = ds.image(i).unwrap();
            let got = &batch.images[k * per_item..(k + 1) * per_item];
            assert!(*got == augmented_chw(&img, 16, augment, &mut item_rng(11, 0, i))[..], "item {i}");
            // Flip and Cutout take their draws first, RandAugment the next ones.
            let mut rng = item_rng(11, 0, i);
            let flipped_and_cut = augmented_rgb(&img, 16, WITH_CUTOUT, &mut rng);
            let want = rand_augment.apply(flipped_and_cut.clone(), &mut rng);
            assert!(augmented_rgb(&img, 16, augment, &mut item_rng(11, 0, i)) == want, "item {i}");
            changed += (want != flipped_and_cut) as usize;
        }
    }
    assert!(changed >= 18, "RandAugment changed {changed} of 21 images");
}

#[test]
fn shuffle_is_per_epoch_and_reproducible() {
    let ds = Arc::new(Tiny::new(50, 3, 8, &[]));
    let all: Vec<usize> = (0..50).collect();
    let order = |epoch: u64, seed: u64| {
        let mut o = options(50, 2);
        o.epoch = epoch;
        o.seed = seed;
        o.augment = Augment::Eval;
        let batches = collect(&ds, all.clone(), o);
        assert_eq!(batches.len(), 1);
        batches.into_iter().next().unwrap().indices
    };
    let e0 = order(0, 11);
    assert_eq!(e0, order(0, 11));
    assert_eq!(e0, epoch_order(&all, true, 11, 0));
    assert_ne!(e0, order(1, 11));
    assert_ne!(order(1, 11), order(2, 11));
    assert_ne!(e0, order(0, 12));
    assert_ne!(e0, all);
    // Without shuffle the order is the given one.
    let mut o = options(7, 3);
    o.shuffle = false;
    let given: Vec<usize> = (0..50).rev().step_by(2).collect();
    let got: Vec<usize> = collect(&ds, given.clone(), o).into_iter().flat_map(|b| b.indices).collect();
    assert_eq!(got, given);
}

#[test]
fn every_item_once_per_epoch_and_drop_last() {
    let ds = Arc::new(Tiny::new(10, 4, 8, &[]));
    let all: Vec<usize> = (0..10).collect();
    for epoch in 0..3 {
        let mut o = options(4, 3);
        o.epoch = epoch;
        let batches = collect(&ds, all.clone(), o.clone());
        assert_eq!(batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(batches[2].dims, vec![2, 3, 16, 16]);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, all);

        o.drop_last = true;
        let dropped = collect(&ds, all.clone(), o);
        assert_eq!(dropped.iter().map(|b| b.indices.len()).collect::<Vec<_>>(), vec![4, 4]);
        for (a, b) in dropped.iter().zip(&batches) {
            assert_eq!(a.indices, b.indices);
        }
    }
    // A subset of the items only.
    let subset = vec![9, 3, 5];
    let got: Vec<usize> = collect(&ds, subset.clone(), options(2, 2)).into_iter().flat_map(|b| b.indices).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![3, 5, 9]);
    // Empty epoch.
    assert!(collect(&ds, vec![], options(2, 2)).is_empty());
    // The loader reports its size.
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    let l = Loader::new(dataset, all, LoaderOptions { drop_last: true, ..options(4, 1) }).unwrap();
    assert_eq!((l.num_batches(), l.num_items()), (2, 10));
}

#[test]
fn an_unreadable_image_ends_the_epoch_with_an_error_naming_it() {
    let bad = [13usize, 27];
    let ds = Arc::new(Tiny::new(40, 3, 8, &bad));
    let all: Vec<usize> = (0..40).collect();
    let mut o = options(4, 3);
    o.shuffle = false;
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    let results: Vec<Result<Batch>> = Loader::new(dataset, all.clone(), o.clone()).unwrap().collect();
    // Batches 0..2 (items 0..12) are fine, the batch holding item 13 is the error, then the end.
    assert_eq!(results.len(), 4);
    for r in &results[..3] {
        assert!(r.is_ok());
    }
    let err = format!("{:#}", results[3].as_ref().err().unwrap());
    assert!(err.contains("/fake/images/img_0013.jpg"), "{err}");
    assert!(!err.contains("img_0027"));

    // The same with the skip flag: the bad items are counted and left out.
    o.skip_bad_images = true;
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    let mut loader = Loader::new(dataset, all.clone(), o.clone()).unwrap();
    let mut batches = Vec::new();
    for b in loader.by_ref() {
        batches.push(plain(b.unwrap()));
    }
    assert_eq!(loader.skipped(), 2);
    // 38 good items: full batches refilled from the next items, 2 left over.
    assert_eq!(batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(), [vec![4; 9], vec![2]].concat());
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    let want: Vec<usize> = all.iter().copied().filter(|i| !bad.contains(i)).collect();
    assert_eq!(seen, want);
    // Skipping is deterministic across worker counts too.
    o.workers = 1;
    o.shuffle = true;
    let a = collect(&ds, all.clone(), o.clone());
    o.workers = 4;
    let b = collect(&ds, all.clone(), o);
    assert_eq!(
        a.iter().map(|x| x.indices.clone()).collect::<Vec<_>>(),
        b.iter().map(|x| x.indices.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn labels_go_through_the_partial_label_mask() {
    let ds = Arc::new(Tiny::new(60, 6, 8, &[]));
    let mask = Arc::new(LabelMask::sample(60, 6, 0.5, 0).unwrap());
    let mut o = options(8, 3);
    o.label_mask = Some(mask.clone());
    let batches = collect(&ds, (0..60).collect(), o);
    let (mut zeros, mut total) = (0, 0);
    for b in &batches {
        assert_eq!(b.labels.len(), b.indices.len() * 6);
        for (k, &i) in b.indices.iter().enumerate() {
            let got = &b.labels[k * 6..(k + 1) * 6];
            assert_eq!(got, mask.apply(ds.labels(i), i).as_slice());
            zeros += got.iter().filter(|&&v| v == 0.0).count();
            total += 6;
        }
    }
    let frac = zeros as f64 / total as f64;
    assert!((0.35..0.65).contains(&frac), "unknown fraction {frac}");

    // A mask of another shape is refused.
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    let mut o = options(8, 1);
    o.label_mask = Some(Arc::new(LabelMask::sample(61, 6, 0.5, 0).unwrap()));
    let err = Loader::new(dataset, (0..60).collect(), o).err().unwrap().to_string();
    assert!(err.contains("61 x 6") && err.contains("60 x 6"), "{err}");
    // So is an index outside the dataset, or a zero batch size.
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    assert!(Loader::new(dataset.clone(), vec![0, 60], options(8, 1)).is_err());
    assert!(Loader::new(dataset, vec![0], options(0, 1)).is_err());
}

#[test]
fn flip_and_cutout_statistics_with_a_fixed_seed() {
    // Left half black, right half white: a flip is visible at pixel (0, 0).
    let side = 16;
    let mut data = Vec::new();
    for _y in 0..side {
        for x in 0..side {
            let v = if x < side / 2 { 0 } else { 255 };
            data.extend_from_slice(&[v, v, v]);
        }
    }
    let img = RgbImage::new(side, side, data).unwrap();
    let n = 4000;
    let flips =
        (0..n).filter(|&i| augmented_rgb(&img, side, FLIP_ONLY, &mut item_rng(3, 0, i)).pixel(0, 0)[0] > 127).count();
    let f = flips as f64 / n as f64;
    assert!((f - 0.5).abs() < 0.03, "flip fraction {f}");
    // Eval never flips and ignores the generator.
    let eval = augmented_rgb(&img, side, Augment::Eval, &mut Rng::new(1));
    assert!(eval.pixel(0, 0)[0] < 128);

    // Cutout on a uniform image: every training image gets exactly one
    // rectangle of one colour (DualCoOp applies it unconditionally), at the
    // place the replayed draws say, of the mean area the DualCoOp rule predicts.
    let grey = RgbImage::new(side, side, vec![100; side * side * 3]).unwrap();
    let base = augmented_rgb(&grey, side, Augment::Eval, &mut Rng::new(0));
    let mut area_sum = 0usize;
    let mut colours = HashSet::new();
    for i in 0..n {
        let out = augmented_rgb(&grey, side, WITH_CUTOUT, &mut item_rng(3, 1, i));
        // The same draws, replayed: flip coin, then the rectangle and its colour.
        let mut replay = item_rng(3, 1, i);
        let mut want = base.clone();
        if replay.uniform() < 0.5 {
            flip_horizontal(&mut want);
        }
        let ((l, t, r, b), colour) = cutout_rect(side, side, CUTOUT_FACTOR, &mut replay);
        for y in t..=b {
            for x in l..=r {
                let k = (y * side + x) * 3;
                want.data[k..k + 3].copy_from_slice(&colour);
            }
        }
        assert!(out == want, "item {i}");
        area_sum += (r - l + 1) * (b - t + 1);
        colours.insert(colour);
    }
    assert!(colours.len() > n * 9 / 10, "fill colours should be random");
    // Expected side: cut = int(0.5 * 16 + 0.5) = 8, half 4, centre uniform, clipped.
    let mean_len: f64 =
        (0..side).map(|c| (c + 4).min(side - 1) - c.saturating_sub(4) + 1).sum::<usize>() as f64 / side as f64;
    let expected = mean_len * mean_len;
    let mean = area_sum as f64 / n as f64;
    assert!((mean - expected).abs() / expected < 0.03, "mean cutout area {mean}, expected {expected}");
    // Without cutout nothing changes on a uniform image.
    let out = augmented_rgb(&grey, side, FLIP_ONLY, &mut item_rng(3, 1, 0));
    let mut flipped = base.clone();
    flip_horizontal(&mut flipped);
    assert!(out == base || out == flipped);
}

#[test]
fn dropping_the_loader_mid_epoch_neither_hangs_nor_leaks_threads() {
    let mut tiny = Tiny::new(400, 3, 24, &[]);
    tiny.delay = Duration::from_millis(2);
    let ds = Arc::new(tiny);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let ds2 = ds.clone();
    std::thread::spawn(move || {
        let dataset: Arc<dyn MultiLabelDataset> = ds2.clone();
        let mut o = options(2, 3);
        o.prefetch_batches = 1;
        let mut loader = Loader::new(dataset, (0..400).collect(), o).unwrap();
        let first = loader.next().unwrap().unwrap();
        assert_eq!(first.len(), 2);
        let start = Instant::now();
        drop(loader);
        done_tx.send(start.elapsed()).unwrap();
    });
    let took = done_rx.recv_timeout(Duration::from_secs(30)).expect("dropping the loader hung");
    assert!(took < Duration::from_secs(5), "drop took {took:?}");
    // Every thread is joined: they held clones of the dataset.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&ds) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(Arc::strong_count(&ds), 1);
    // Prefetch is bounded: far from all 400 images were decoded.
    let calls = ds.calls.load(Ordering::SeqCst);
    assert!(calls < 40, "decoded {calls} images for one batch of 2");

    // Dropping before the first batch and after an error also returns.
    let dataset: Arc<dyn MultiLabelDataset> = ds.clone();
    drop(Loader::new(dataset, (0..400).collect(), options(2, 3)).unwrap());
    let bad = Arc::new(Tiny::new(30, 3, 8, &[0]));
    let dataset: Arc<dyn MultiLabelDataset> = bad.clone();
    let mut l = Loader::new(dataset, (0..30).collect(), LoaderOptions { shuffle: false, ..options(2, 3) }).unwrap();
    assert!(l.next().unwrap().is_err());
    assert!(l.next().is_none());
    drop(l);
    assert_eq!(Arc::strong_count(&bad), 1);
}

#[test]
fn validation_split_is_a_seeded_disjoint_holdout() {
    let (train, val) = split_validation(1000, 0.1, 0);
    assert_eq!(val.len(), 100);
    assert_eq!(train.len(), 900);
    let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert!(train.windows(2).all(|w| w[0] < w[1]) && val.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(split_validation(1000, 0.1, 0), (train.clone(), val.clone()));
    assert_ne!(split_validation(1000, 0.1, 1).1, val);
    // Not simply the first or last items.
    assert!(val.iter().any(|&i| i < 500) && val.iter().any(|&i| i >= 500));
    assert_eq!(split_validation(10, 0.0, 0), ((0..10).collect(), vec![]));
    assert_eq!(split_validation(3, 0.01, 0).1.len(), 1);
    assert_eq!(split_validation(1, 0.5, 0).1.len(), 0);
    assert!(std::panic::catch_unwind(|| split_validation(10, 1.0, 0)).is_err());
    assert!(std::panic::catch_unwind(|| split_validation(10, f64::NAN, 0)).is_err());
}
