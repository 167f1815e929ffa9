//! The on-disk data sources (src/data/{coco,voc,list}.rs): a mini COCO, a
//! mini VOC and CSV/JSON lists, written at run time into a fresh folder
//! under the system temp dir (tiny JPEG/PNG images from the `image` crate's
//! encoders), their label rules, and every bad-input case, each error
//! checked to name the file (and the field, class, id or line).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use mlrpl_engine::data::coco::{CocoDataset, CocoSplit, COCO_CATEGORIES};
use mlrpl_engine::data::dataset::{MultiLabelDataset, NEGATIVE as N, POSITIVE as P, UNKNOWN as U};
use mlrpl_engine::data::list::{read_class_names, ListDataset, OpenOptions};
use mlrpl_engine::data::voc::{DifficultPolicy, VocDataset, VOC_CLASSES};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fresh folder under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("mlrpl-datasets-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A tiny image whose colour encodes `seed`, as JPEG or PNG (by extension).
fn write_image(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([seed, (x * 20) as u8, (y * 30) as u8]));
    img.save(path).unwrap();
}

fn opts(skip: bool) -> OpenOptions {
    OpenOptions { skip_missing_images: skip }
}

/// The error's full text (all causes), for the `contains` checks.
fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[track_caller]
fn assert_mentions(msg: &str, parts: &[&str]) {
    // `SHOW_ERRORS=1 cargo test --test datasets -- --nocapture` prints them.
    if std::env::var_os("SHOW_ERRORS").is_some() {
        eprintln!("{msg}");
    }
    for p in parts {
        assert!(msg.contains(p), "error message does not mention {p:?}:\n{msg}");
    }
}

fn labels_of(ds: &dyn MultiLabelDataset, i: usize) -> Vec<f32> {
    ds.labels(i).to_vec()
}

/// A label row with `P` at the given classes, `N` elsewhere.
fn row(classes: &[&str], names: &[String], unknown: &[&str]) -> Vec<f32> {
    names
        .iter()
        .map(|n| {
            if classes.contains(&n.as_str()) {
                P
            } else if unknown.contains(&n.as_str()) {
                U
            } else {
                N
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// COCO
// ---------------------------------------------------------------------------

/// COCO's category ids: 1..=90 without the 10 unused ones.
fn coco_ids() -> Vec<u64> {
    let unused = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83];
    (1..=90).filter(|i| !unused.contains(i)).collect()
}

fn coco_categories_json(rename: Option<(u64, &str)>, extra: Option<(u64, &str)>) -> String {
    let ids = coco_ids();
    let mut cats: Vec<String> = ids
        .iter()
        .zip(COCO_CATEGORIES)
        .map(|(&id, name)| {
            let name = match rename {
                Some((rid, new)) if rid == id => new,
                _ => name,
            };
            format!(r#"{{"supercategory": "x", "id": {id}, "name": "{name}"}}"#)
        })
        .collect();
    if let Some((id, name)) = extra {
        cats.push(format!(r#"{{"id": {id}, "name": "{name}"}}"#));
    }
    // Out of id order on purpose: the loader sorts by id.
    cats.reverse();
    format!("[{}]", cats.join(", "))
}

const COCO_IMAGES: &str = r#"[
  {"license": 3, "file_name": "COCO_val2014_000000000009.jpg", "height": 6, "width": 8, "id": 9},
  {"license": 3, "file_name": "COCO_val2014_000000000042.jpg", "height": 6, "width": 8, "id": 42},
  {"license": 1, "file_name": "COCO_val2014_000000000077.jpg", "height": 6, "width": 8, "id": 77},
  {"license": 1, "file_name": "COCO_val2014_000000000005.jpg", "height": 6, "width": 8, "id": 5}
]"#;

/// person (1) and dog (18, twice) on 9; toothbrush (90) and a crowd person
/// on 42; nothing on 77; car (3) on 5.
const COCO_ANNOTATIONS: &str = r#"[
  {"segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], "area": 10.5, "iscrowd": 0, "image_id": 9, "bbox": [0, 0, 2, 2], "category_id": 1, "id": 100},
  {"segmentation": [[1.0, 2.0, 3.0, 4.0]], "area": 3.0, "iscrowd": 0, "image_id": 9, "bbox": [0, 0, 2, 2], "category_id": 18, "id": 101},
  {"segmentation": [[1.0, 2.0]], "area": 3.0, "iscrowd": 0, "image_id": 9, "bbox": [0, 0, 2, 2], "category_id": 18, "id": 102},
  {"segmentation": [[1.0, 2.0]], "area": 3.0, "iscrowd": 0, "image_id": 42, "bbox": [0, 0, 2, 2], "category_id": 90, "id": 103},
  {"segmentation": {"counts": [1, 2, 3], "size": [6, 8]}, "area": 9.0, "iscrowd": 1, "image_id": 42, "bbox": [0, 0, 2, 2], "category_id": 1, "id": 104},
  {"segmentation": [[1.0, 2.0]], "area": 3.0, "iscrowd": 0, "image_id": 5, "bbox": [0, 0, 2, 2], "category_id": 3, "id": 105}
]"#;

fn coco_json(images: &str, annotations: &str, categories: &str) -> String {
    format!(
        r#"{{"info": {{"description": "mini"}}, "licenses": [], "images": {images},
            "annotations": {annotations}, "categories": {categories}}}"#
    )
}

/// A mini COCO val2014 (annotation file + 4 JPEGs) under `root`.
fn make_coco(root: &Path) -> PathBuf {
    let ann = root.join("annotations/instances_val2014.json");
    write(&ann, &coco_json(COCO_IMAGES, COCO_ANNOTATIONS, &coco_categories_json(None, None)));
    for (i, id) in [9, 42, 77, 5].iter().enumerate() {
        write_image(&root.join(format!("val2014/COCO_val2014_{id:012}.jpg")), 40 * i as u8);
    }
    ann
}

#[test]
fn coco_category_constant_is_in_id_order() {
    assert_eq!(COCO_CATEGORIES.len(), 80);
    assert_eq!(COCO_CATEGORIES[0], "person");
    assert_eq!(COCO_CATEGORIES[16], "dog"); // id 18
    assert_eq!(COCO_CATEGORIES[62], "tv"); // id 72
    assert_eq!(COCO_CATEGORIES[79], "toothbrush"); // id 90
    let mut unique: Vec<&str> = COCO_CATEGORIES.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 80);
}

#[test]
fn coco_mini_labels_order_and_images() {
    let tmp = TempDir::new("coco");
    make_coco(tmp.path());
    let ds = CocoDataset::open(tmp.path(), CocoSplit::Val2014, &opts(false)).unwrap();
    let names = ds.class_names().to_vec();
    assert_eq!(names.len(), 80);
    assert_eq!(names.iter().map(String::as_str).collect::<Vec<_>>(), COCO_CATEGORIES.to_vec());
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.describe(), format!("COCO 2014 val ({})", tmp.path().display()));
    // File order of `images`, not id order.
    let items: Vec<String> = (0..4).map(|i| ds.item_name(i)).collect();
    assert_eq!(
        items,
        [
            "COCO_val2014_000000000009.jpg",
            "COCO_val2014_000000000042.jpg",
            "COCO_val2014_000000000077.jpg",
            "COCO_val2014_000000000005.jpg"
        ]
    );
    assert_eq!(labels_of(&ds, 0), row(&["person", "dog"], &names, &[]));
    // Crowd annotations count.
    assert_eq!(labels_of(&ds, 1), row(&["person", "toothbrush"], &names, &[]));
    // No annotation: kept, all negative.
    assert_eq!(labels_of(&ds, 2), vec![N; 80]);
    assert_eq!(labels_of(&ds, 3), row(&["car"], &names, &[]));
    assert_eq!(ds.unannotated_count(), 1);
    assert_eq!(ds.skipped_missing_images().count, 0);
    assert!(ds.skipped_missing_images().warning().is_none());
    assert_eq!(ds.image_path(3), tmp.path().join("val2014/COCO_val2014_000000000005.jpg"));

    // Images decode (JPEG, 8x6; the red channel encodes the index).
    for i in 0..4 {
        let img = ds.image(i).unwrap();
        assert_eq!((img.width, img.height), (8, 6));
        let r = img.pixel(0, 0)[0] as i32;
        assert!((r - 40 * i as i32).abs() <= 8, "image {i}: red {r}");
    }

    // DualCoOp's set: without the unannotated image.
    let ann_only = ds.without_unannotated();
    assert_eq!(ann_only.len(), 3);
    assert_eq!(ann_only.item_name(2), "COCO_val2014_000000000005.jpg");
    assert_eq!(labels_of(&ann_only, 2), row(&["car"], &names, &[]));
    assert_eq!(ann_only.unannotated_count(), 0);
}

#[test]
fn coco_split_names() {
    assert_eq!("train".parse::<CocoSplit>().unwrap(), CocoSplit::Train2014);
    assert_eq!("val2014".parse::<CocoSplit>().unwrap(), CocoSplit::Val2014);
    assert_mentions(&err_text("test2015".parse::<CocoSplit>()), &["test2015", "train2014", "val2014"]);
    assert_eq!(CocoSplit::Train2014.name(), "train2014");
}

#[test]
fn coco_missing_annotation_file() {
    let tmp = TempDir::new("coco-noann");
    make_coco(tmp.path());
    // Only val2014 exists.
    let msg = err_text(CocoDataset::open(tmp.path(), CocoSplit::Train2014, &opts(false)));
    let want = tmp.path().join("annotations/instances_train2014.json");
    assert_mentions(&msg, &[&want.display().to_string(), "file not found", "train2014"]);
}

#[test]
fn coco_bad_annotation_files() {
    let tmp = TempDir::new("coco-bad");
    let ann = make_coco(tmp.path());
    let file = ann.display().to_string();
    let cats = coco_categories_json(None, None);
    let open = || CocoDataset::open(tmp.path(), CocoSplit::Val2014, &opts(false));

    // Malformed JSON (truncated).
    let good = coco_json(COCO_IMAGES, COCO_ANNOTATIONS, &cats);
    write(&ann, &good[..good.len() / 2]);
    assert_mentions(&err_text(open()), &[&file, "cannot parse COCO annotation file"]);

    // A missing field in an image.
    let images = COCO_IMAGES.replace(r#""file_name": "COCO_val2014_000000000042.jpg", "#, "");
    write(&ann, &coco_json(&images, COCO_ANNOTATIONS, &cats));
    assert_mentions(&err_text(open()), &[&file, "missing field `file_name`"]);

    // A missing field in an annotation.
    let anns = COCO_ANNOTATIONS.replace(r#""category_id": 3, "#, "");
    write(&ann, &coco_json(COCO_IMAGES, &anns, &cats));
    assert_mentions(&err_text(open()), &[&file, "missing field `category_id`"]);

    // A missing top-level section.
    write(&ann, &format!(r#"{{"images": {COCO_IMAGES}, "categories": {cats}}}"#));
    assert_mentions(&err_text(open()), &[&file, "missing field `annotations`"]);

    // An annotation with an unknown category id (12 is unused in COCO).
    let anns = COCO_ANNOTATIONS.replace(r#""category_id": 3, "id": 105"#, r#""category_id": 12, "id": 105"#);
    write(&ann, &coco_json(COCO_IMAGES, &anns, &cats));
    assert_mentions(&err_text(open()), &[&file, "category id 12", "annotation id 105"]);

    // An annotation on an image id that is not listed.
    let anns = COCO_ANNOTATIONS.replace(r#""image_id": 5,"#, r#""image_id": 6,"#);
    write(&ann, &coco_json(COCO_IMAGES, &anns, &cats));
    assert_mentions(&err_text(open()), &[&file, "image id 6"]);

    // Category names that are not COCO's.
    write(&ann, &coco_json(COCO_IMAGES, COCO_ANNOTATIONS, &coco_categories_json(Some((72, "tvmonitor")), None)));
    assert_mentions(&err_text(open()), &[&file, "category id 72", "'tvmonitor'", "expected 'tv'"]);

    // An 81st category.
    write(&ann, &coco_json(COCO_IMAGES, COCO_ANNOTATIONS, &coco_categories_json(None, Some((91, "banner")))));
    assert_mentions(&err_text(open()), &[&file, "81 categories", "80"]);

    // Duplicate image id.
    let images = COCO_IMAGES.replace(r#""id": 77"#, r#""id": 42"#);
    write(&ann, &coco_json(&images, COCO_ANNOTATIONS, &cats));
    assert_mentions(&err_text(open()), &[&file, "image id 42", "twice"]);

    // A wrong type.
    let images = COCO_IMAGES.replace(r#""id": 77"#, r#""id": "77""#);
    write(&ann, &coco_json(&images, COCO_ANNOTATIONS, &cats));
    assert_mentions(&err_text(open()), &[&file, "invalid type"]);

    // Back to a good file: it opens.
    write(&ann, &good);
    assert_eq!(open().unwrap().len(), 4);
}

#[test]
fn coco_missing_images() {
    let tmp = TempDir::new("coco-missing");
    let ann = make_coco(tmp.path());
    let gone = tmp.path().join("val2014/COCO_val2014_000000000042.jpg");
    std::fs::remove_file(&gone).unwrap();

    let msg = err_text(CocoDataset::open(tmp.path(), CocoSplit::Val2014, &opts(false)));
    assert_mentions(&msg, &[&gone.display().to_string(), &ann.display().to_string(), "1 of 4", "not found"]);

    let ds = CocoDataset::open(tmp.path(), CocoSplit::Val2014, &opts(true)).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.skipped_missing_images().count, 1);
    assert_eq!(ds.skipped_missing_images().examples, vec![gone.clone()]);
    let warning = ds.skipped_missing_images().warning().unwrap();
    assert_mentions(&warning, &["skipped 1 missing image", &gone.display().to_string()]);
    // The remaining rows keep their own labels.
    let names = ds.class_names().to_vec();
    assert_eq!(ds.item_name(1), "COCO_val2014_000000000077.jpg");
    assert_eq!(labels_of(&ds, 1), vec![N; 80]);
    assert_eq!(labels_of(&ds, 2), row(&["car"], &names, &[]));

    // The whole image folder missing: an error even when skipping.
    std::fs::remove_dir_all(tmp.path().join("val2014")).unwrap();
    for skip in [false, true] {
        let msg = err_text(CocoDataset::open(tmp.path(), CocoSplit::Val2014, &opts(skip)));
        assert_mentions(&msg, &[&tmp.path().join("val2014").display().to_string(), "does not exist"]);
    }
}

#[test]
fn coco_empty_or_corrupt_image_is_named_at_load_time() {
    let tmp = TempDir::new("coco-empty");
    make_coco(tmp.path());
    let empty = tmp.path().join("val2014/COCO_val2014_000000000077.jpg");
    std::fs::write(&empty, b"").unwrap();
    let truncated = tmp.path().join("val2014/COCO_val2014_000000000005.jpg");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    // Existence is all that is checked at open time.
    let ds = CocoDataset::open(tmp.path(), CocoSplit::Val2014, &opts(false)).unwrap();
    assert_mentions(&err_text(ds.image(2)), &[&empty.display().to_string(), "empty"]);
    assert_mentions(&err_text(ds.image(3)), &[&truncated.display().to_string()]);
    assert!(ds.image(0).is_ok());
}

// ---------------------------------------------------------------------------
// VOC
// ---------------------------------------------------------------------------

fn voc_object(name: &str, difficult: Option<&str>) -> String {
    let diff = difficult.map(|d| format!("<difficult>{d}</difficult>")).unwrap_or_default();
    format!(
        "<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>{diff}\
         <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>4</ymax></bndbox></object>"
    )
}

fn voc_xml(id: &str, objects: &[String]) -> String {
    format!(
        "<annotation>\n  <folder>VOC2007</folder>\n  <filename>{id}.jpg</filename>\n  \
         <size><width>8</width><height>6</height><depth>3</depth></size>\n  <segmented>0</segmented>\n  {}\n</annotation>\n",
        objects.join("\n  ")
    )
}

/// A mini VOC 2007 under `root/VOCdevkit/VOC2007`:
/// * 000001: dog; person only difficult; car difficult and not;
/// * 000002: cat; chair only difficult (two objects);
/// * 000003: aeroplane with no `<difficult>` element (counts as 0).
///
/// trainval = 000001, 000002, 000003 (with a blank line and CRLF); test =
/// 000003.
fn make_voc(root: &Path) -> PathBuf {
    let dir = root.join("VOCdevkit/VOC2007");
    let ann = |id: &str, objs: Vec<String>| write(&dir.join(format!("Annotations/{id}.xml")), &voc_xml(id, &objs));
    ann(
        "000001",
        vec![
            voc_object("dog", Some("0")),
            voc_object("person", Some("1")),
            voc_object("car", Some("1")),
            voc_object("car", Some("0")),
        ],
    );
    ann("000002", vec![voc_object("cat", Some("0")), voc_object("chair", Some("1")), voc_object("chair", Some("1"))]);
    ann("000003", vec![voc_object("aeroplane", None)]);
    write(&dir.join("ImageSets/Main/trainval.txt"), "000001\r\n000002\r\n\r\n000003\r\n");
    write(&dir.join("ImageSets/Main/test.txt"), "000003\n");
    for (i, id) in ["000001", "000002", "000003"].iter().enumerate() {
        write_image(&dir.join(format!("JPEGImages/{id}.jpg")), 60 * i as u8);
    }
    dir
}

#[test]
fn voc_mini_labels_and_difficult_policies() {
    let tmp = TempDir::new("voc");
    let dir = make_voc(tmp.path());
    let ds = VocDataset::open(tmp.path(), "trainval", false, &opts(false)).unwrap();
    let names = ds.class_names().to_vec();
    assert_eq!(names, VOC_CLASSES.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(names[0], "aeroplane");
    assert_eq!(names[19], "tvmonitor");
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.describe(), format!("VOC 2007 trainval ({})", dir.display()));
    assert_eq!((0..3).map(|i| ds.item_name(i)).collect::<Vec<_>>(), ["000001", "000002", "000003"]);
    assert_eq!(ds.image_path(1), dir.join("JPEGImages/000002.jpg"));

    // Default: difficult-only is unknown.
    assert_eq!(labels_of(&ds, 0), row(&["dog", "car"], &names, &["person"]));
    assert_eq!(labels_of(&ds, 1), row(&["cat"], &names, &["chair"]));
    assert_eq!(labels_of(&ds, 2), row(&["aeroplane"], &names, &[]));
    assert_eq!(ds.difficult_only_count(), 2);
    let img = ds.image(2).unwrap();
    assert_eq!((img.width, img.height), (8, 6));

    // include_difficult: positive.
    let inc = VocDataset::open(tmp.path(), "trainval", true, &opts(false)).unwrap();
    assert_eq!(labels_of(&inc, 0), row(&["dog", "car", "person"], &names, &[]));
    assert_eq!(labels_of(&inc, 1), row(&["cat", "chair"], &names, &[]));

    // HCP-MLR-PL / DualCoOp: negative.
    let neg = VocDataset::open_with_policy(tmp.path(), "trainval", DifficultPolicy::Negative, &opts(false)).unwrap();
    assert_eq!(labels_of(&neg, 0), row(&["dog", "car"], &names, &[]));
    assert_eq!(labels_of(&neg, 1), row(&["cat"], &names, &[]));

    // The test split; the root may also be VOCdevkit or VOC2007 itself.
    for root in [tmp.path().to_path_buf(), tmp.path().join("VOCdevkit"), dir.clone()] {
        let test = VocDataset::open(&root, "test", false, &opts(false)).unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(test.item_name(0), "000003");
        assert_eq!(test.split(), "test");
    }
}

#[test]
fn voc_missing_layout_split_and_annotation() {
    let tmp = TempDir::new("voc-missing");
    let dir = make_voc(tmp.path());

    // Not a VOC root.
    let elsewhere = tmp.path().join("nothing-here");
    std::fs::create_dir_all(&elsewhere).unwrap();
    assert_mentions(
        &err_text(VocDataset::open(&elsewhere, "trainval", false, &opts(false))),
        &[&elsewhere.display().to_string(), "VOCdevkit/VOC2007"],
    );

    // A split without its image-set file.
    let msg = err_text(VocDataset::open(tmp.path(), "val", false, &opts(false)));
    assert_mentions(&msg, &[&dir.join("ImageSets/Main/val.txt").display().to_string(), "file not found"]);
    assert_mentions(&err_text(VocDataset::open(tmp.path(), "../x", false, &opts(false))), &["'../x'"]);

    // A bad line in the image-set file.
    let list = dir.join("ImageSets/Main/train.txt");
    write(&list, "000001\n000002 1\n");
    assert_mentions(
        &err_text(VocDataset::open(tmp.path(), "train", false, &opts(false))),
        &[&list.display().to_string(), "line 2"],
    );

    // A missing annotation file (even when skipping missing images).
    let xml = dir.join("Annotations/000002.xml");
    std::fs::remove_file(&xml).unwrap();
    for skip in [false, true] {
        let msg = err_text(VocDataset::open(tmp.path(), "trainval", false, &opts(skip)));
        assert_mentions(&msg, &[&xml.display().to_string(), "file not found"]);
    }
}

#[test]
fn voc_bad_annotation_files() {
    let tmp = TempDir::new("voc-bad");
    let dir = make_voc(tmp.path());
    let xml = dir.join("Annotations/000002.xml");
    let file = xml.display().to_string();
    let open = || VocDataset::open(tmp.path(), "trainval", false, &opts(false));

    // Malformed XML.
    write(&xml, "<annotation><object><name>cat</name></object>");
    assert_mentions(&err_text(open()), &[&file, "cannot parse VOC annotation file"]);

    // An unknown class.
    write(&xml, &voc_xml("000002", &[voc_object("cat", Some("0")), voc_object("unicorn", Some("0"))]));
    assert_mentions(&err_text(open()), &[&file, "'unicorn'", "object> number 2"]);

    // An object without a name.
    write(&xml, "<annotation><object><difficult>0</difficult></object></annotation>");
    assert_mentions(&err_text(open()), &[&file, "no <name>"]);

    // A bad difficult flag.
    write(&xml, &voc_xml("000002", &[voc_object("cat", Some("yes"))]));
    assert_mentions(&err_text(open()), &[&file, "<difficult>yes</difficult>"]);

    // The wrong root element.
    write(&xml, "<annotations></annotations>");
    assert_mentions(&err_text(open()), &[&file, "<annotations>"]);

    // Class names are matched ignoring case, as HCP-MLR-PL lowercases them.
    write(&xml, &voc_xml("000002", &[voc_object("Cat", Some("0"))]));
    let ds = open().unwrap();
    assert_eq!(labels_of(&ds, 1), row(&["cat"], ds.class_names(), &[]));
}

#[test]
fn voc_missing_images() {
    let tmp = TempDir::new("voc-img");
    let dir = make_voc(tmp.path());
    let gone = dir.join("JPEGImages/000001.jpg");
    std::fs::remove_file(&gone).unwrap();
    // The annotation of a dropped image is not needed either.
    std::fs::remove_file(dir.join("Annotations/000001.xml")).unwrap();
    let list = dir.join("ImageSets/Main/trainval.txt");

    let msg = err_text(VocDataset::open(tmp.path(), "trainval", false, &opts(false)));
    assert_mentions(&msg, &[&gone.display().to_string(), &list.display().to_string(), "1 of 3"]);

    let ds = VocDataset::open(tmp.path(), "trainval", false, &opts(true)).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.skipped_missing_images().count, 1);
    assert_eq!(ds.item_name(0), "000002");
    assert_eq!(labels_of(&ds, 0), row(&["cat"], ds.class_names(), &["chair"]));

    // A zero-byte JPEG is found when loaded, and named.
    let empty = dir.join("JPEGImages/000003.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert_mentions(&err_text(ds.image(1)), &[&empty.display().to_string(), "empty"]);
}

// ---------------------------------------------------------------------------
// CSV / JSON lists
// ---------------------------------------------------------------------------

#[test]
fn csv_list_formats_and_inferred_classes() {
    let tmp = TempDir::new("csv");
    let root = tmp.path();
    write_image(&root.join("imgs/a.jpg"), 10);
    write_image(&root.join("imgs/b.png"), 20);
    write_image(&root.join("imgs/with, comma.png"), 30);
    write_image(&root.join("imgs/empty.png"), 40);
    let elsewhere = TempDir::new("csv-abs");
    let abs = elsewhere.path().join("abs.png");
    write_image(&abs, 50);

    let csv = root.join("list.csv");
    let text = format!(
        "\u{feff}path,labels\r\n\
         # a comment\r\n\
         imgs/a.jpg,dog;cat\r\n\
         \r\n\
         imgs/b.png, traffic light ; ?dog ;\r\n\
         \"imgs/with, comma.png\",cat\r\n\
         imgs/empty.png,\r\n\
         {},?bird\r\n",
        abs.display()
    );
    write(&csv, &text);
    let ds = ListDataset::open(&csv, None, &opts(false)).unwrap();
    // Sorted union of every label, positive or unknown.
    assert_eq!(ds.class_names(), ["bird", "cat", "dog", "traffic light"]);
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.describe(), format!("image list {}", csv.display()));
    assert_eq!(ds.item_name(2), "imgs/with, comma.png");
    assert_eq!(ds.image_path(0), root.join("imgs/a.jpg"));
    assert_eq!(ds.image_path(4), abs.as_path());
    assert_eq!(labels_of(&ds, 0), [N, P, P, N]);
    assert_eq!(labels_of(&ds, 1), [N, N, U, P]);
    assert_eq!(labels_of(&ds, 2), [N, P, N, N]);
    assert_eq!(labels_of(&ds, 3), [N, N, N, N]);
    assert_eq!(labels_of(&ds, 4), [U, N, N, N]);
    for i in 0..5 {
        assert_eq!(ds.image(i).unwrap().width, 8);
    }

    // An explicit class list sets the order and may hold unseen classes.
    let classes: Vec<String> = ["traffic light", "dog", "cat", "bird", "horse"].iter().map(|s| s.to_string()).collect();
    let ds = ListDataset::open(&csv, Some(classes), &opts(false)).unwrap();
    assert_eq!(labels_of(&ds, 0), [N, P, P, N, N]);
    assert_eq!(labels_of(&ds, 1), [P, U, N, N, N]);

    // Without a header, the first line is an item.
    write(&csv, "imgs/a.jpg,cat\nimgs/b.png\n");
    let ds = ListDataset::open(&csv, None, &opts(false)).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(labels_of(&ds, 1), [N]);
}

#[test]
fn csv_list_errors_name_the_line() {
    let tmp = TempDir::new("csv-bad");
    let root = tmp.path();
    write_image(&root.join("a.png"), 1);
    write_image(&root.join("b.png"), 2);
    let csv = root.join("list.csv");
    let file = csv.display().to_string();
    let open = |classes: Option<Vec<String>>| ListDataset::open(&csv, classes, &opts(false));

    write(&csv, "path,labels\na.png,cat\nb.png,cat,dog\n");
    assert_mentions(&err_text(open(None)), &[&file, "line 3", "3 comma-separated fields", "';'"]);

    write(&csv, "a.png,cat\n\"b.png,dog\n");
    assert_mentions(&err_text(open(None)), &[&file, "line 2", "unterminated"]);

    write(&csv, "a.png,cat\nb\"x.png,dog\n");
    assert_mentions(&err_text(open(None)), &[&file, "line 2", "quote"]);

    write(&csv, "a.png,cat\n,dog\n");
    assert_mentions(&err_text(open(None)), &[&file, "line 2", "empty image path"]);

    write(&csv, "a.png,cat;?\n");
    assert_mentions(&err_text(open(None)), &[&file, "line 1", "'?'"]);

    write(&csv, "a.png,cat;?cat\n");
    assert_mentions(&err_text(open(None)), &[&file, "line 1", "'cat'", "both positive and unknown"]);

    write(&csv, "a.png,cat\nb.png,zebra\n");
    let classes = vec!["cat".to_string(), "dog".to_string()];
    assert_mentions(&err_text(open(Some(classes))), &[&file, "line 2", "'zebra'", "not in the class list"]);

    write(&csv, "a.png,\nb.png\n");
    assert_mentions(&err_text(open(None)), &[&file, "no labels", "class list"]);
    // ... which is fine with an explicit class list (all negative).
    let ds = open(Some(vec!["cat".to_string()])).unwrap();
    assert_eq!((ds.len(), labels_of(&ds, 0)), (2, vec![N]));

    write(&csv, "path,labels\n# nothing\n");
    assert_mentions(&err_text(open(None)), &[&file, "no image"]);

    write(&csv, "a.png,cat\n");
    assert_mentions(&err_text(open(Some(vec!["a".into(), "a".into()]))), &["'a'", "twice"]);

    let missing = root.join("nope.csv");
    assert_mentions(
        &err_text(ListDataset::open(&missing, None, &opts(false))),
        &[&missing.display().to_string(), "file not found"],
    );

    // A missing image: an error naming it and the list, or skipped.
    write(&csv, "a.png,cat\ngone.png,dog\nb.png,dog\n");
    let gone = root.join("gone.png");
    assert_mentions(&err_text(open(None)), &[&gone.display().to_string(), &file, "1 of 3"]);
    let ds = ListDataset::open(&csv, None, &opts(true)).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.skipped_missing_images().count, 1);
    assert_eq!(ds.item_name(1), "b.png");
    assert_eq!(labels_of(&ds, 1), [N, P]);

    // Every image missing is an error even when skipping.
    write(&csv, "x.png,cat\ny.png,dog\n");
    assert_mentions(&err_text(ListDataset::open(&csv, None, &opts(true))), &[&file, "none of the 2 images"]);
}

#[test]
fn json_list() {
    let tmp = TempDir::new("json");
    let root = tmp.path();
    write_image(&root.join("x/a.png"), 1);
    write_image(&root.join("x/b.jpg"), 2);
    write_image(&root.join("x/c.png"), 3);
    let json = root.join("items.json");
    write(
        &json,
        r#"[
          {"path": "x/a.png", "labels": ["dog", "cat"]},
          {"path": "x/b.jpg", "labels": ["cat"], "unknown": ["person"]},
          {"path": "x/c.png"}
        ]"#,
    );
    let ds = ListDataset::open(&json, None, &opts(false)).unwrap();
    assert_eq!(ds.class_names(), ["cat", "dog", "person"]);
    assert_eq!(labels_of(&ds, 0), [P, P, N]);
    assert_eq!(labels_of(&ds, 1), [P, N, U]);
    assert_eq!(labels_of(&ds, 2), [N, N, N]);
    assert_eq!(ds.item_name(1), "x/b.jpg");
    assert!(ds.image(1).is_ok());

    let file = json.display().to_string();
    let open = || ListDataset::open(&json, None, &opts(false));
    write(&json, r#"[{"path": "x/a.png", "label": ["dog"]}]"#);
    assert_mentions(&err_text(open()), &[&file, "unknown field `label`", "line 1"]);
    write(&json, r#"[{"labels": ["dog"]}]"#);
    assert_mentions(&err_text(open()), &[&file, "missing field `path`"]);
    write(&json, "[{\"path\": \"x/a.png\",\n \"labels\": [\"dog\"]");
    assert_mentions(&err_text(open()), &[&file, "cannot parse list file", "line 2"]);
    write(&json, r#"[{"path": "x/a.png", "labels": ["dog"]}, {"path": "x/b.jpg", "labels": ["emu"]}]"#);
    let classes = vec!["dog".to_string()];
    assert_mentions(
        &err_text(ListDataset::open(&json, Some(classes), &opts(false))),
        &[&file, "item 1", "x/b.jpg", "'emu'"],
    );
    write(&json, r#"[{"path": "x/a.png", "labels": ["dog"], "unknown": ["dog"]}]"#);
    assert_mentions(&err_text(open()), &[&file, "item 0", "both positive and unknown"]);
}

#[test]
fn class_files() {
    let tmp = TempDir::new("classes");
    let f = tmp.path().join("classes.txt");
    write(&f, "# my classes\ncat\n\n  traffic light  \ndog\n");
    assert_eq!(read_class_names(&f).unwrap(), ["cat", "traffic light", "dog"]);
    let file = f.display().to_string();
    write(&f, "cat\ndog\ncat\n");
    assert_mentions(&err_text(read_class_names(&f)), &[&file, "line 3", "'cat'", "twice"]);
    write(&f, "cat\n?dog\n");
    assert_mentions(&err_text(read_class_names(&f)), &[&file, "line 2", "'?'"]);
    write(&f, "cat\na;b\n");
    assert_mentions(&err_text(read_class_names(&f)), &[&file, "line 2", "';'"]);
    write(&f, "\n# none\n");
    assert_mentions(&err_text(read_class_names(&f)), &[&file, "no class"]);
    let missing = tmp.path().join("none.txt");
    assert_mentions(&err_text(read_class_names(&missing)), &[&missing.display().to_string(), "file not found"]);
}

#[test]
fn all_sources_are_trait_objects() {
    let tmp = TempDir::new("dyn");
    make_coco(&tmp.path().join("coco"));
    make_voc(&tmp.path().join("voc"));
    write_image(&tmp.path().join("a.png"), 1);
    write(&tmp.path().join("l.csv"), "a.png,cat\n");
    let sets: Vec<Box<dyn MultiLabelDataset>> = vec![
        Box::new(CocoDataset::open(&tmp.path().join("coco"), CocoSplit::Val2014, &opts(false)).unwrap()),
        Box::new(VocDataset::open(&tmp.path().join("voc"), "test", false, &opts(false)).unwrap()),
        Box::new(ListDataset::open(&tmp.path().join("l.csv"), None, &opts(false)).unwrap()),
    ];
    for s in &sets {
        assert!(!s.is_empty());
        for i in 0..s.len() {
            assert_eq!(s.labels(i).len(), s.class_names().len());
            assert!(s.labels(i).iter().all(|&v| v == P || v == N || v == U));
        }
        assert!(s.image(0).is_ok(), "{}", s.describe());
    }
}

// ---------------------------------------------------------------------------
// Real data (ignored; needs the downloads)
// ---------------------------------------------------------------------------

/// `COCO_ROOT=/data/coco VOC_ROOT=/data/voc cargo test --release --test
/// datasets -- --ignored --nocapture real_data`: opens the real sets (the
/// ones whose variable is set), prints sizes, timings and label counts.
#[test]
#[ignore]
fn real_data() {
    use std::time::Instant;
    let summary = |ds: &dyn MultiLabelDataset, secs: f64| {
        let (mut pos, mut unk) = (0usize, 0usize);
        for i in 0..ds.len() {
            pos += ds.labels(i).iter().filter(|&&v| v == P).count();
            unk += ds.labels(i).iter().filter(|&&v| v == U).count();
        }
        eprintln!(
            "{}: {} images, {pos} positive and {unk} unknown labels, opened in {secs:.2} s",
            ds.describe(),
            ds.len()
        );
    };
    if let Some(root) = std::env::var_os("COCO_ROOT") {
        for split in [CocoSplit::Train2014, CocoSplit::Val2014] {
            let t = Instant::now();
            match CocoDataset::open(Path::new(&root), split, &opts(true)) {
                Ok(ds) => {
                    summary(&ds, t.elapsed().as_secs_f64());
                    eprintln!(
                        "  {} without annotations; {:?}",
                        ds.unannotated_count(),
                        ds.skipped_missing_images().warning()
                    );
                }
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
    if let Some(root) = std::env::var_os("VOC_ROOT") {
        for split in ["trainval", "test"] {
            let t = Instant::now();
            match VocDataset::open(Path::new(&root), split, false, &opts(true)) {
                Ok(ds) => {
                    summary(&ds, t.elapsed().as_secs_f64());
                    eprintln!("  {} difficult-only (image, class) pairs", ds.difficult_only_count());
                }
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
}
