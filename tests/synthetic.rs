//! The embedded procedural data set (src/data/synthetic/): determinism,
//! labels, category balance, captions, split disjointness, tensors.
//!
//! `cargo test --release --test synthetic -- --ignored --nocapture` also runs
//! the timing and writes a sample grid (`SYNTH_GRID=/tmp/grid.png` to choose
//! where).

use std::collections::HashSet;
use std::time::Instant;

use mlrpl_engine::clip::tokenizer::Tokenizer;
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::image::{normalize_chw, preprocess, Preprocess};
use mlrpl_engine::data::synthetic::{
    category_index, contact_sheet, save_png, Split, SyntheticSet, BACKGROUNDS, BACKGROUND_MEAN_RGB, CATEGORIES,
    CATEGORY_PLURALS, COLOURS, COLOUR_RGB, FIRST_SHAPES_ONLY_TEMPLATE, NUM_TEMPLATES,
};
use mlrpl_engine::rng::Rng;

fn set(split: Split, seed: u64, size: usize) -> SyntheticSet {
    SyntheticSet::new(split, seed, size).unwrap()
}

/// FNV-1a over the bytes.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[test]
fn same_inputs_same_pixels_and_other_inputs_differ() {
    let a = set(Split::Train, 7, 64);
    let b = set(Split::Train, 7, 64);
    for i in 0..50 {
        let (x, y) = (a.sample(i), b.sample(i));
        assert_eq!(x.image, y.image, "index {i}");
        assert_eq!(x.objects, y.objects);
        assert_eq!(a.caption(i, 3), b.caption(i, 3));
    }
    let other_seed = set(Split::Train, 8, 64);
    let other_split = set(Split::Val, 7, 64);
    let mut same_seed = 0;
    let mut same_split = 0;
    for i in 0..50 {
        same_seed += (a.render(i) == other_seed.render(i)) as usize;
        same_split += (a.render(i) == other_split.render(i)) as usize;
    }
    assert_eq!((same_seed, same_split), (0, 0));
    // A longer set extends a shorter one.
    let long = set(Split::Train, 7, 64).with_len(5000).unwrap();
    assert_eq!(long.render(1999), a.render(1999));
    assert_eq!(long.len(), 5000);
}

/// Pins the bytes of a few images: a change in drawing (or a platform that
/// rounds differently) shows up here. Update the constant only on purpose.
#[test]
fn pixels_are_pinned() {
    let mut all = Vec::new();
    for (split, seed, size) in [(Split::Train, 0, 64), (Split::Test, 1, 48), (Split::Pretrain, 2, 96)] {
        let s = set(split, seed, size);
        for i in [0, 1, 17, 123] {
            all.extend_from_slice(&s.render(i).data);
        }
    }
    let h = fnv(&all);
    println!("pinned hash {h:#018x}");
    assert_eq!(h, PINNED_HASH, "synthetic pixels changed: {h:#018x}");
}
const PINNED_HASH: u64 = 0xc4fc_376f_815f_75ce;

#[test]
fn scenes_do_not_depend_on_resolution() {
    let small = set(Split::Train, 3, 32);
    let big = set(Split::Train, 3, 224);
    for i in 0..20 {
        assert_eq!(small.scene(i), big.scene(i));
        let im = big.render(i);
        assert_eq!((im.width, im.height, im.data.len()), (224, 224, 224 * 224 * 3));
    }
}

#[test]
fn labels_match_objects_and_cardinality_is_as_documented() {
    let s = set(Split::Train, 0, 64);
    let n = 500;
    let mut per_class = vec![0usize; CATEGORIES.len()];
    let mut per_count = [0usize; 5];
    let mut label_sum = 0usize;
    for i in 0..n {
        let smp = s.sample(i);
        assert_eq!(smp.labels.len(), CATEGORIES.len());
        assert!((1..=4).contains(&smp.objects.len()), "index {i}: {} objects", smp.objects.len());
        for (c, &l) in smp.labels.iter().enumerate() {
            assert_eq!(l, smp.objects.iter().any(|o| o.category == c), "index {i} class {c}");
            per_class[c] += l as usize;
        }
        assert_eq!(smp.labels, s.label_flags(i));
        assert_eq!(BACKGROUNDS[smp.background_index], smp.background);
        per_count[smp.objects.len()] += 1;
        label_sum += smp.labels.iter().filter(|&&l| l).count();
    }
    let freq: Vec<f64> = per_class.iter().map(|&k| k as f64 / n as f64).collect();
    println!("per-class frequency {freq:.3?}");
    println!("objects per image (0..=4) {per_count:?}");
    let card = label_sum as f64 / n as f64;
    println!("label cardinality {card:.3}");
    for (c, f) in freq.iter().enumerate() {
        assert!((0.10..=0.50).contains(f), "{} in {:.1}% of images", CATEGORIES[c], 100.0 * f);
    }
    // Documented draw: 25 / 35 / 25 / 15 % for 1..4 objects (a few
    // crowded 4th objects are dropped); about 2.1 distinct labels.
    let frac = |k: usize| per_count[k] as f64 / n as f64;
    assert!((0.18..=0.33).contains(&frac(1)), "{per_count:?}");
    assert!((0.27..=0.43).contains(&frac(2)), "{per_count:?}");
    assert!((0.18..=0.33).contains(&frac(3)), "{per_count:?}");
    assert!((0.08..=0.22).contains(&frac(4)), "{per_count:?}");
    assert!((1.8..=2.4).contains(&card), "label cardinality {card}");
}

#[test]
fn objects_are_inside_visible_and_apart() {
    let s = set(Split::Val, 5, 64);
    let mut bgs = HashSet::new();
    let mut colours = HashSet::new();
    for i in 0..s.len() {
        let sc = s.scene(i);
        bgs.insert(sc.background);
        for (k, o) in sc.objects.iter().enumerate() {
            colours.insert(o.colour);
            assert!(o.x - o.radius >= -1e-6 && o.x + o.radius <= 1.0 + 1e-6, "{o:?}");
            assert!(o.y - o.radius >= -1e-6 && o.y + o.radius <= 1.0 + 1e-6, "{o:?}");
            assert!(if o.large { o.radius >= 0.19 } else { o.radius <= 0.15 }, "{o:?}");
            assert!(o.rotation_deg.abs() <= 360);
            let (c, b) = (COLOUR_RGB[o.colour], BACKGROUND_MEAN_RGB[sc.background]);
            let d2: i32 = (0..3).map(|j| (c[j] as i32 - b[j] as i32).pow(2)).sum();
            assert!(
                d2 >= 85 * 85,
                "{} on {}: distance {}",
                o.colour_name(),
                BACKGROUNDS[sc.background],
                (d2 as f64).sqrt()
            );
            for p in &sc.objects[..k] {
                let d = ((p.x - o.x).powi(2) + (p.y - o.y).powi(2)).sqrt();
                assert!(d >= 0.75 * (p.radius + o.radius) - 1e-6);
            }
        }
    }
    assert_eq!(bgs.len(), BACKGROUNDS.len());
    assert_eq!(colours.len(), COLOURS.len());
}

#[test]
fn objects_change_the_pixels_they_cover() {
    // Each object's colour is found (exactly, at full coverage) in the image
    // unless a later object hides it entirely; check the last object drawn.
    let s = set(Split::Train, 11, 64);
    for i in 0..200 {
        let smp = s.sample(i);
        let last = smp.objects.last().unwrap();
        let col = COLOUR_RGB[last.colour];
        let hits = smp.image.data.chunks_exact(3).filter(|p| *p == col).count();
        let area = (last.radius * 64.0).powi(2);
        assert!(hits as f32 >= 0.2 * area, "index {i}: {hits} pixels of {last:?}");
    }
}

#[test]
fn captions_name_every_object() {
    let s = set(Split::Pretrain, 1, 32);
    let mut rng = Rng::new(9);
    let mut seen = HashSet::new();
    let mut plural = 0;
    for i in 0..300 {
        let smp = s.sample(i);
        let mut caps: Vec<String> = (0..NUM_TEMPLATES).map(|t| smp.caption_with_template(t, &mut rng)).collect();
        caps.push(smp.caption(&mut rng));
        caps.push(s.caption(i, 0));
        caps.push(s.caption(i, 1));
        for (t, cap) in caps.iter().enumerate() {
            assert!(cap.ends_with('.'), "{cap}");
            assert!(!cap.contains("  "), "{cap}");
            let names_background = cap.contains(smp.background) || smp.background == "dark" && cap.contains("black");
            for o in &smp.objects {
                assert!(cap.contains(o.category_name()), "`{cap}` lacks {}", o.category_name());
            }
            // Templates up to FIRST_SHAPES_ONLY_TEMPLATE describe everything,
            // those after it the shapes alone; random templates may be either.
            if t < FIRST_SHAPES_ONLY_TEMPLATE {
                assert!(names_background, "{cap}");
                for o in &smp.objects {
                    assert!(cap.contains(o.colour_name()), "`{cap}` lacks {}", o.colour_name());
                }
            } else if t < NUM_TEMPLATES {
                assert!(!names_background, "{cap}");
                assert!(smp.objects.iter().all(|o| !cap.contains(o.colour_name())), "{cap}");
            }
            // Any named category is really there.
            for (c, name) in CATEGORIES.iter().enumerate() {
                let word_present =
                    cap.split(|ch: char| !ch.is_alphabetic()).any(|w| w == *name || w == CATEGORY_PLURALS[c]);
                assert_eq!(word_present, smp.labels[c], "`{cap}` and {name}");
            }
            plural += CATEGORY_PLURALS.iter().any(|p| cap.contains(p)) as usize;
            seen.insert(cap.clone());
        }
        assert_eq!(category_index(smp.objects[0].category_name()), Some(smp.objects[0].category));
    }
    assert!(plural > 50, "only {plural} captions with a plural");
    assert!(seen.len() > 2000, "only {} distinct captions", seen.len());
    assert_ne!(s.caption(0, 0), s.caption(0, 5).clone() + "x");
}

#[test]
fn splits_are_disjoint() {
    let hashes = |split: Split| -> HashSet<u64> {
        let s = set(split, 0, 64);
        (0..200).map(|i| fnv(&s.render(i).data)).collect()
    };
    let sets: Vec<HashSet<u64>> = Split::ALL.iter().map(|&sp| hashes(sp)).collect();
    for (a, sa) in sets.iter().enumerate() {
        assert!(sa.len() >= 199, "{} repeats images within itself", Split::ALL[a]);
        for (b, sb) in sets.iter().enumerate().skip(a + 1) {
            let shared = sa.intersection(sb).count();
            assert_eq!(shared, 0, "{} and {} share {shared} images", Split::ALL[a], Split::ALL[b]);
        }
    }
    assert_eq!(Split::ALL.map(|s| s.default_len()), [2000, 400, 400, 20000], "documented default sizes");
    assert_eq!("pretrain".parse::<Split>().unwrap(), Split::Pretrain);
    assert!("training".parse::<Split>().is_err());
}

#[test]
fn tensors_have_the_model_layout() {
    let s = set(Split::Test, 2, 32);
    let idx = [0usize, 5, 3, 399];
    let x = s.images_tensor(&idx, Preprocess::Resize { size: 32 }).unwrap();
    assert_eq!(x.dims(), &[4, 3, 32, 32]);
    let v = x.to_vec().unwrap();
    for (k, &i) in idx.iter().enumerate() {
        let want = normalize_chw(&s.render(i));
        assert_eq!(&v[k * 3072..(k + 1) * 3072], &want[..], "image {i} at R = size passes unresampled");
    }
    let y = s.images_tensor(&idx, Preprocess::Resize { size: 48 }).unwrap();
    assert_eq!(y.dims(), &[4, 3, 48, 48]);
    let yv = y.to_vec().unwrap();
    assert_eq!(&yv[3 * 6912..], &preprocess(&s.render(399), Preprocess::Resize { size: 48 })[..]);
    let l = s.labels_tensor(&idx).unwrap();
    assert_eq!(l.dims(), &[4, CATEGORIES.len()]);
    let lv = l.to_vec().unwrap();
    for (k, &i) in idx.iter().enumerate() {
        let want: Vec<f32> = s.label_flags(i).iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
        assert_eq!(&lv[k * 10..(k + 1) * 10], &want[..]);
    }
    assert!(s.images_tensor(&[400], Preprocess::Resize { size: 32 }).is_err());
    assert!(s.labels_tensor(&[400]).is_err());
    assert!(SyntheticSet::new(Split::Train, 0, 8).is_err());
}

#[test]
fn words_are_single_clip_tokens_and_captions_fit_the_context() {
    let tok = Tokenizer::shared().unwrap();
    // Plurals may take two tokens ("triangles" = "tri" + "angles").
    for w in CATEGORIES.iter().chain(COLOURS).chain(BACKGROUNDS) {
        assert_eq!(tok.encode(w).len(), 1, "`{w}` is not one CLIP token: {:?}", tok.encode(w));
    }
    let s = set(Split::Pretrain, 0, 16);
    let mut rng = Rng::new(1);
    let mut longest = 0;
    for i in 0..400 {
        let smp = s.sample(i);
        for t in 0..NUM_TEMPLATES {
            longest = longest.max(tok.encode(&smp.caption_with_template(t, &mut rng)).len());
        }
    }
    println!("longest caption: {longest} tokens + SOT/EOT");
    assert!(longest + 2 <= 77, "a caption of {longest} tokens overflows CLIP's context");
}

#[test]
fn works_as_a_multi_label_dataset() {
    let s = set(Split::Val, 4, 32);
    let d: std::sync::Arc<dyn MultiLabelDataset> = std::sync::Arc::new(s.clone());
    assert_eq!(d.len(), 400);
    assert_eq!(d.class_names(), CATEGORIES);
    assert!(d.describe().contains("val"), "{}", d.describe());
    assert_eq!(d.item_name(7), "synthetic/val/seed4/7");
    for i in [0, 1, 123, 399] {
        let want: Vec<f32> = s.label_flags(i).iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
        assert_eq!(d.labels(i), &want[..]);
        assert_eq!(d.image(i).unwrap(), s.render(i));
    }
    assert!(d.image(400).is_err());
}

/// Timing and a picture to look at; run with `--ignored --nocapture`.
#[test]
#[ignore]
fn speed_and_sample_grid() {
    // On-CPU time of this thread (Linux), so that a busy machine does not
    // inflate the single-thread figure.
    let cpu_ns = || -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
    };
    let s = set(Split::Train, 0, 64).with_len(10_000).unwrap();
    let (t, c) = (Instant::now(), cpu_ns());
    let mut sink = 0u64;
    for i in 0..1000 {
        sink = sink.wrapping_add(s.render(i).data[0] as u64);
    }
    let one = t.elapsed();
    if let (Some(a), Some(b)) = (c, cpu_ns()) {
        println!("1000 images 64x64, one thread: {:.1} ms on-CPU", (b - a) as f64 / 1e6);
    }
    let (t, c) = (Instant::now(), cpu_ns());
    for i in 0..1000 {
        sink = sink.wrapping_add(s.scene(i).objects.len() as u64);
    }
    if let (Some(a), Some(b)) = (c, cpu_ns()) {
        println!(
            "1000 scenes (layout only): {:.2} ms on-CPU, {:.2} ms wall",
            (b - a) as f64 / 1e6,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let idx: Vec<usize> = (0..1000).collect();
    let t = Instant::now();
    let x = s.images_tensor(&idx, Preprocess::Resize { size: 64 }).unwrap();
    let batch = t.elapsed();
    let s224 = set(Split::Train, 0, 224);
    let t = Instant::now();
    for i in 0..100 {
        sink = sink.wrapping_add(s224.render(i).data[0] as u64);
    }
    let big = t.elapsed();
    println!(
        "1000 images 64x64 on one thread: {:.1} ms; images_tensor of 1000 (rayon, {} threads): {:.1} ms; \
         100 images 224x224: {:.1} ms ({sink} {:?})",
        one.as_secs_f64() * 1e3,
        rayon::current_num_threads(),
        batch.as_secs_f64() * 1e3,
        big.as_secs_f64() * 1e3,
        x.dims()
    );
    // What to draw: SYNTH_GRID (path), SYNTH_SPLIT, SYNTH_SEED, SYNTH_SIZE,
    // SYNTH_START, SYNTH_COUNT (default /tmp/synthetic-grid.png, train, 0,
    // 64, 0, 8).
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let path = var("SYNTH_GRID", "/tmp/synthetic-grid.png");
    let split: Split = var("SYNTH_SPLIT", "train").parse().unwrap();
    let seed: u64 = var("SYNTH_SEED", "0").parse().unwrap();
    let size: usize = var("SYNTH_SIZE", "64").parse().unwrap();
    let start: usize = var("SYNTH_START", "0").parse().unwrap();
    let count: usize = var("SYNTH_COUNT", "8").parse().unwrap();
    let s = set(split, seed, size).with_len(start + count).unwrap();
    let imgs: Vec<_> = (start..start + count).map(|i| s.render(i)).collect();
    let scale = (256 / size).max(1);
    save_png(&contact_sheet(&imgs, 4, scale).unwrap(), path.as_ref()).unwrap();
    for i in start..start + count {
        let smp = s.sample(i);
        let objs: Vec<String> = smp
            .objects
            .iter()
            .map(|o| format!("{} {} {} at {}", o.size_word(), o.colour_name(), o.category_name(), o.position_word()))
            .collect();
        println!("{i}: [{}] on {}  | {}", objs.join("; "), smp.background, s.caption(i, 0));
    }
    let big = set(Split::Train, 0, 64).with_len(20_000).unwrap();
    let mut counts = [0usize; 5];
    let mut labels = 0usize;
    let mut dup = 0usize;
    let mut per_class = [0usize; 10];
    for i in 0..big.len() {
        let sc = big.scene(i);
        for (c, l) in sc.labels().into_iter().enumerate() {
            per_class[c] += l as usize;
        }
        counts[sc.objects.len()] += 1;
        let l = sc.labels().iter().filter(|&&b| b).count();
        labels += l;
        dup += (l < sc.objects.len()) as usize;
    }
    println!(
        "20000 train scenes: objects 1..4 {:?}, mean labels {:.3}, images with a repeated category {:.1}%",
        &counts[1..],
        labels as f64 / 20000.0,
        dup as f64 / 200.0
    );
    let freq: Vec<f64> = per_class.iter().map(|&k| k as f64 / 20000.0).collect();
    println!("per-class frequency over 20000: {freq:.3?}");
    let mut rng = Rng::new(0);
    for i in start..start + 2 {
        let smp = s.sample(i);
        for t in 0..NUM_TEMPLATES {
            println!("  image {i} template {t}: {}", smp.caption_with_template(t, &mut rng));
        }
    }
    println!("grid written to {path}");
}
