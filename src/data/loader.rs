//! The batch loader: images decoded and augmented on worker threads, ahead
//! of the model, assembled into batches in a fixed order.
//!
//! # Determinism
//!
//! The epoch's item order is `indices`, shuffled (Fisher-Yates) with a
//! generator derived from `(seed, epoch)` when `shuffle` is on; item `i`'s
//! augmentation uses [`item_rng`]`(seed, epoch, i)`. Batches are cut from
//! that order in sequence, so the batches and their contents are the same
//! for any number of workers and any thread scheduling.
//!
//! # Threads
//!
//! `W` worker threads: worker `w` prepares the items at positions `w, w + W,
//! w + 2W, ...` of the epoch order and sends each result on its own bounded
//! channel (`std::sync::mpsc::sync_channel`). One assembler thread receives
//! position 0, 1, 2, ... from the channel that owns it (so in order, with no
//! reordering buffer), copies images and masked labels into the batch
//! buffers, and sends finished batches on a channel bounded by
//! `prefetch_batches`. The iterator only receives a finished batch and wraps
//! its buffers in tensors. At most about `prefetch_batches + 2` batches are
//! in memory.
//!
//! # Unreadable images
//!
//! By default the first unreadable image (in epoch order) ends the epoch:
//! the batches before it are yielded, then the error (which names the file),
//! then `None`. With `skip_bad_images` the item is left out, [`Loader::skipped`]
//! counts it, and a warning naming the file is printed to stderr once per
//! file per process; batches are filled with the next readable items, so all
//! but the last batch stay full (the last one is dropped if `drop_last`).
//!
//! Dropping the loader mid-epoch stops the workers (a flag, and the
//! channels disconnect) and joins every thread before `drop` returns; a
//! worker in the middle of decoding an image finishes that image first.

use super::augment::{augmented_chw, derive_seed, item_rng, Augment, TAG_SHUFFLE, TAG_SPLIT};
use super::dataset::MultiLabelDataset;
use super::partial::LabelMask;
use crate::rng::Rng;
use crate::{Device, Tensor};
use anyhow::{anyhow, bail, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

/// How a [`Loader`] cuts, orders and transforms one epoch.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// Items per batch (at least 1).
    pub batch_size: usize,
    /// Shuffle the order with a generator derived from `(seed, epoch)`.
    pub shuffle: bool,
    pub seed: u64,
    pub epoch: u64,
    /// Worker threads decoding images; 0 = the machine's parallelism.
    pub workers: usize,
    /// Finished batches waiting for the consumer (0 = hand over one at a
    /// time, still assembled ahead).
    pub prefetch_batches: usize,
    /// The side R of the square model input.
    pub image_size: usize,
    pub augment: Augment,
    /// Drop the last batch if it has fewer than `batch_size` items.
    pub drop_last: bool,
    /// Partial labels: dropped labels become UNKNOWN (indexed by dataset
    /// item index).
    pub label_mask: Option<Arc<LabelMask>>,
    /// Leave unreadable images out (counted, warned once) instead of failing.
    pub skip_bad_images: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            shuffle: false,
            seed: 0,
            epoch: 0,
            workers: 0,
            prefetch_batches: 2,
            image_size: 224,
            augment: Augment::Eval,
            drop_last: false,
            label_mask: None,
            skip_bad_images: false,
        }
    }
}

/// One batch: `images` `[B, 3, R, R]` (CLIP-normalised), `labels` `[B, C]`
/// (after the partial-label mask: 1, -1 or 0), and the dataset indices of
/// its items in order.
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

struct RawBatch {
    images: Vec<f32>,
    labels: Vec<f32>,
    indices: Vec<usize>,
}

/// The epoch's item order: `indices`, shuffled from `(seed, epoch)` when
/// `shuffle` is set.
pub fn epoch_order(indices: &[usize], shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order = indices.to_vec();
    if shuffle {
        let mut rng = Rng::new(derive_seed(&[TAG_SHUFFLE, seed, epoch]));
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
    }
    order
}

/// Checks a validation fraction: it must lie in [0, 1).
pub fn check_validation_fraction(fraction: f64) -> Result<()> {
    if !(0.0..1.0).contains(&fraction) {
        bail!("the validation fraction must be in [0, 1), got {fraction}");
    }
    Ok(())
}

/// A seeded holdout of `num_items` training items: `(train, validation)`,
/// both in ascending order, disjoint, together `0..num_items`. The
/// validation part has `round(num_items * fraction)` items, at least one
/// when `fraction > 0` and `num_items >= 2`, and never all of them. The
/// chosen items depend only on `(num_items, fraction, seed)`.
///
/// Panics if `fraction` is outside [0, 1) (see [`check_validation_fraction`]).
pub fn split_validation(num_items: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if let Err(e) = check_validation_fraction(fraction) {
        panic!("{e}");
    }
    let mut n_val = (num_items as f64 * fraction).round() as usize;
    if fraction > 0.0 && num_items >= 2 {
        n_val = n_val.max(1);
    }
    n_val = n_val.min(num_items.saturating_sub(1));
    let mut perm: Vec<usize> = (0..num_items).collect();
    let mut rng = Rng::new(derive_seed(&[TAG_SPLIT, seed]));
    for i in (1..perm.len()).rev() {
        let j = rng.below(i + 1);
        perm.swap(i, j);
    }
    let mut val = perm[..n_val].to_vec();
    let mut train = perm[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

/// Prints the skip warning for `name` once per process.
fn warn_once(name: &str, error: &anyhow::Error) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut set = WARNED.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|e| e.into_inner());
    if set.insert(name.to_string()) {
        let message = format!("{error:#}");
        if message.contains(name) {
            eprintln!("warning: skipping an unreadable image: {message}");
        } else {
            eprintln!("warning: skipping unreadable image {name}: {message}");
        }
    }
}

/// An epoch of batches; see the module documentation.
pub struct Loader {
    rx: Option<Receiver<Result<RawBatch>>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    skipped: Arc<AtomicUsize>,
    done: bool,
    image_size: usize,
    num_classes: usize,
    num_batches: usize,
    num_items: usize,
}

impl Loader {
    /// Starts the threads of one epoch over the dataset items `indices`.
    /// Errors: a zero batch or image size, an index outside the dataset, a
    /// label mask of another shape.
    pub fn new(dataset: Arc<dyn MultiLabelDataset>, indices: Vec<usize>, options: LoaderOptions) -> Result<Loader> {
        let LoaderOptions {
            batch_size,
            shuffle,
            seed,
            epoch,
            workers,
            prefetch_batches,
            image_size,
            augment,
            drop_last,
            label_mask,
            skip_bad_images,
        } = options;
        if batch_size == 0 {
            bail!("the batch size must be at least 1");
        }
        if image_size == 0 {
            bail!("the image size must be at least 1");
        }
        let len = dataset.len();
        let num_classes = dataset.class_names().len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
            bail!("item index {bad} is outside {} ({len} items)", dataset.describe());
        }
        if let Some(mask) = &label_mask {
            mask.check_shape(len, num_classes)?;
        }
        let workers =
            if workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { workers };
        let order = Arc::new(epoch_order(&indices, shuffle, seed, epoch));
        let n = order.len();
        let num_batches = if drop_last { n / batch_size } else { n.div_ceil(batch_size) };
        let workers = workers.min(n.max(1));

        let stop = Arc::new(AtomicBool::new(false));
        let skipped = Arc::new(AtomicUsize::new(0));
        let item_capacity = batch_size.div_ceil(workers) + 1;
        let mut threads = Vec::with_capacity(workers + 1);
        let mut item_rxs = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<Vec<f32>>>(item_capacity);
            item_rxs.push(rx);
            let (dataset, order, stop) = (dataset.clone(), order.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loader-worker-{w}"))
                .spawn(move || worker(dataset, order, w, workers, image_size, augment, seed, epoch, stop, tx))
                .map_err(|e| anyhow!("cannot start a loader thread: {e}"))?;
            threads.push(handle);
        }
        let (batch_tx, batch_rx) = sync_channel::<Result<RawBatch>>(prefetch_batches);
        let assembler = Assembler {
            dataset,
            order,
            item_rxs,
            batch_tx,
            batch_size,
            drop_last,
            num_classes,
            label_mask,
            skip_bad_images,
            stop: stop.clone(),
            skipped: skipped.clone(),
        };
        let handle = std::thread::Builder::new().name("loader-assembler".into()).spawn(move || assembler.run());
        let mut loader = Loader {
            rx: Some(batch_rx),
            threads,
            stop,
            skipped,
            done: false,
            image_size,
            num_classes,
            num_batches,
            num_items: n,
        };
        match handle {
            Ok(h) => loader.threads.push(h),
            Err(e) => {
                loader.shutdown();
                bail!("cannot start a loader thread: {e}");
            }
        }
        Ok(loader)
    }

    /// Items left out so far because their image could not be read.
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::SeqCst)
    }

    /// The number of batches of the epoch if no image is skipped.
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }

    /// The number of items of the epoch (before skips and `drop_last`).
    pub fn num_items(&self) -> usize {
        self.num_items
    }

    /// Stops and joins every thread.
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Disconnecting the batch channel wakes an assembler blocked on it;
        // its exit drops the item receivers, which wakes blocked workers.
        self.rx = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(Ok(raw)) => {
                let b = raw.indices.len();
                let (r, c) = (self.image_size, self.num_classes);
                let batch = Tensor::from_vec(raw.images, vec![b, 3, r, r], &Device::Cpu).and_then(|images| {
                    let labels = Tensor::from_vec(raw.labels, vec![b, c], &Device::Cpu)?;
                    Ok(Batch { images, labels, indices: raw.indices })
                });
                if batch.is_err() {
                    self.done = true;
                    self.shutdown();
                }
                Some(batch)
            }
            Ok(Err(e)) => {
                self.done = true;
                self.shutdown();
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                self.shutdown();
                None
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    dataset: Arc<dyn MultiLabelDataset>,
    order: Arc<Vec<usize>>,
    first: usize,
    step: usize,
    image_size: usize,
    augment: Augment,
    seed: u64,
    epoch: u64,
    stop: Arc<AtomicBool>,
    tx: SyncSender<Result<Vec<f32>>>,
) {
    for pos in (first..order.len()).step_by(step) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let index = order[pos];
        let item = dataset.image(index).map(|img| {
            let mut rng = item_rng(seed, epoch, index);
            augmented_chw(&img, image_size, augment, &mut rng)
        });
        if tx.send(item).is_err() {
            return;
        }
    }
}

struct Assembler {
    dataset: Arc<dyn MultiLabelDataset>,
    order: Arc<Vec<usize>>,
    item_rxs: Vec<Receiver<Result<Vec<f32>>>>,
    batch_tx: SyncSender<Result<RawBatch>>,
    batch_size: usize,
    drop_last: bool,
    num_classes: usize,
    label_mask: Option<Arc<LabelMask>>,
    skip_bad_images: bool,
    stop: Arc<AtomicBool>,
    skipped: Arc<AtomicUsize>,
}

impl Assembler {
    fn empty(&self) -> RawBatch {
        RawBatch {
            images: Vec::new(),
            labels: Vec::with_capacity(self.batch_size * self.num_classes),
            indices: Vec::with_capacity(self.batch_size),
        }
    }

    fn fail(&self, error: anyhow::Error) {
        let _ = self.batch_tx.send(Err(error));
    }

    fn run(self) {
        let workers = self.item_rxs.len();
        let mut batch = self.empty();
        for (pos, &index) in self.order.iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let item = match self.item_rxs[pos % workers].recv() {
                Ok(item) => item,
                Err(_) => {
                    return self.fail(anyhow!(
                        "loader worker {} stopped before item {index} of {} (did it panic?)",
                        pos % workers,
                        self.dataset.describe()
                    ))
                }
            };
            let image = match item {
                Ok(image) => image,
                Err(e) => {
                    let name = self.dataset.item_name(index);
                    if self.skip_bad_images {
                        self.skipped.fetch_add(1, Ordering::SeqCst);
                        warn_once(&name, &e);
                        continue;
                    }
                    // The dataset's error names the file; add the item's name if it does not.
                    let e = if format!("{e:#}").contains(&name) {
                        e
                    } else {
                        e.context(format!("cannot load {name} (item {index})"))
                    };
                    return self.fail(e);
                }
            };
            let labels = self.dataset.labels(index);
            if labels.len() != self.num_classes {
                return self.fail(anyhow!(
                    "item {index} ({}) has {} labels, {} has {} classes",
                    self.dataset.item_name(index),
                    labels.len(),
                    self.dataset.describe(),
                    self.num_classes
                ));
            }
            if batch.images.is_empty() {
                batch.images.reserve_exact(image.len() * self.batch_size);
            }
            batch.images.extend_from_slice(&image);
            let start = batch.labels.len();
            batch.labels.extend_from_slice(labels);
            if let Some(mask) = &self.label_mask {
                mask.apply_in_place(&mut batch.labels[start..], index);
            }
            batch.indices.push(index);
            if batch.indices.len() == self.batch_size {
                let full = std::mem::replace(&mut batch, self.empty());
                if self.batch_tx.send(Ok(full)).is_err() {
                    return;
                }
            }
        }
        if !batch.indices.is_empty() && !self.drop_last {
            let _ = self.batch_tx.send(Ok(batch));
        }
    }
}
