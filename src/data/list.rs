//! A user's own multi-label data: a CSV or JSON list of image paths and
//! their labels, plus [`OpenOptions`] and the missing-image check shared by
//! every on-disk data source (COCO, VOC, lists).
//!
//! * CSV (any file name not ending in `.json`): one item per line,
//!   `path,label1;label2;...`.
//!   - Optional header line `path,labels` (first non-blank line, any case).
//!   - Blank lines and lines whose first character is `#` are skipped.
//!   - A UTF-8 byte-order mark and `\r\n` line ends are accepted.
//!   - The labels field may be empty or absent (`img.jpg,` or `img.jpg`):
//!     every class is then a known negative for that image.
//!   - A label written `?name` marks class `name` *unknown* (0) for that
//!     image instead of positive; classes not listed are negatives.
//!   - Labels are trimmed; empty entries (`a;;b`, a trailing `;`) are ignored.
//!   - A field may be enclosed in double quotes (RFC 4180 style, `""` for a
//!     literal quote) so a path may contain commas; a quoted field may not
//!     span lines. More than two fields on a line is an error that says to
//!     quote the path.
//! * JSON (`.json`): `[{"path": "a.jpg", "labels": ["cat", "dog"],
//!   "unknown": ["bird"]}, ...]`; `labels` and `unknown` are optional
//!   (default empty); any other key is an error (it catches `"label"`).
//! * Paths are relative to the list file's folder, or absolute.
//! * Classes: the explicit list if one is given (`--classes` file, see
//!   [`read_class_names`]; a label outside it is an error), else the sorted
//!   (byte order) union of every label the file mentions, positive or
//!   unknown.
//! * Errors name the file, and for CSV the 1-based line, for JSON the item.
//!
//! See `docs/datasets.md`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use serde::Deserialize;

use super::dataset::{FileDataset, ImageFiles, NEGATIVE, POSITIVE, UNKNOWN};

// ---------------------------------------------------------------------------
// Options and the missing-image check (shared with coco.rs and voc.rs)
// ---------------------------------------------------------------------------

/// How an on-disk data source is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Drop images that are listed but absent on disk (counted, see
    /// [`SkippedImages`]) instead of failing on the first one.
    pub skip_missing_images: bool,
}

/// The listed images that were not found on disk and were dropped (only
/// with [`OpenOptions::skip_missing_images`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkippedImages {
    /// How many were dropped.
    pub count: usize,
    /// The first few of them (at most [`SkippedImages::MAX_EXAMPLES`]).
    pub examples: Vec<PathBuf>,
}

impl SkippedImages {
    pub const MAX_EXAMPLES: usize = 3;

    /// `skipped N missing images (e.g. a, b, c)`, or `None` if none was.
    pub fn warning(&self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let examples: Vec<String> = self.examples.iter().map(|p| p.display().to_string()).collect();
        let plural = if self.count == 1 { "" } else { "s" };
        Some(format!("skipped {} missing image{plural} (e.g. {})", self.count, examples.join(", ")))
    }
}

/// Checks that every path exists (metadata only, in parallel). Returns which
/// items to keep and what was skipped. Without `skip_missing_images` a
/// missing image is an error naming it and `listed_in`; errors other than
/// "not found" (permissions, a directory in place of the file) always fail.
pub(crate) fn check_images(
    paths: &[PathBuf],
    listed_in: &Path,
    options: &OpenOptions,
) -> Result<(Vec<bool>, SkippedImages)> {
    let status: Vec<Result<bool>> = paths
        .par_iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err(anyhow!(
                "image {} listed in {} is a directory, not an image file",
                p.display(),
                listed_in.display()
            )),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow!("cannot access image {} listed in {}: {}", p.display(), listed_in.display(), e)),
        })
        .collect();
    let keep = status.into_iter().collect::<Result<Vec<bool>>>()?;
    let missing: Vec<&PathBuf> = paths.iter().zip(&keep).filter(|(_, &k)| !k).map(|(p, _)| p).collect();
    if !missing.is_empty() && !options.skip_missing_images {
        bail!(
            "image {} listed in {} not found ({} of {} listed images are missing; \
             --skip-bad-images drops them)",
            missing[0].display(),
            listed_in.display(),
            missing.len(),
            paths.len()
        );
    }
    if !paths.is_empty() && missing.len() == paths.len() {
        bail!(
            "none of the {} images listed in {} exists (first: {}); is the image folder right?",
            paths.len(),
            listed_in.display(),
            missing[0].display()
        );
    }
    let skipped = SkippedImages {
        count: missing.len(),
        examples: missing.iter().take(SkippedImages::MAX_EXAMPLES).map(|p| (*p).clone()).collect(),
    };
    Ok((keep, skipped))
}

/// `std::fs::read` with a one-line error `cannot read <what> <path>: <problem>`.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        let problem = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ if path.is_dir() => "is a directory".to_string(),
            _ => e.to_string(),
        };
        anyhow!("cannot read {what} {}: {problem}", path.display())
    })
}

/// [`read_file`] as UTF-8 text, without a leading byte-order mark.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = read_file(path, what)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "cannot read {what} {}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

// ---------------------------------------------------------------------------
// Class lists
// ---------------------------------------------------------------------------

/// Reads a class file: one class name per line, trimmed; blank lines and
/// lines starting with `#` are skipped. Errors (with the line number) on a
/// duplicate or an invalid name (see [`validate_class_names`]).
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path, "class file")?;
    let mut names: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let ctx = |msg: String| anyhow!("class file {} line {}: {msg}", path.display(), i + 1);
        check_class_name(name).map_err(ctx)?;
        if names.iter().any(|n| n == name) {
            return Err(ctx(format!("class '{name}' is listed twice")));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        bail!("class file {} lists no class", path.display());
    }
    Ok(names)
}

/// A class name must be non-empty, without surrounding spaces, must not
/// start with `?` (the unknown marker) and must not contain `;` (the CSV
/// label separator) or a line break.
fn check_class_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty class name".into());
    }
    if name.trim() != name {
        return Err(format!("class name '{name}' has leading or trailing spaces"));
    }
    if name.starts_with('?') {
        return Err(format!("class name '{name}' starts with '?' (the unknown-label marker)"));
    }
    if name.contains(';') || name.contains('\n') || name.contains('\r') {
        return Err(format!("class name '{name}' contains ';' or a line break"));
    }
    Ok(())
}

/// Checks an explicit class list: non-empty, each name valid, no duplicates.
pub fn validate_class_names(names: &[String]) -> Result<()> {
    if names.is_empty() {
        bail!("the class list is empty");
    }
    for (i, n) in names.iter().enumerate() {
        check_class_name(n).map_err(|m| anyhow!("class list entry {}: {m}", i + 1))?;
        if names[..i].contains(n) {
            bail!("class list entry {}: class '{n}' is listed twice", i + 1);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// List files
// ---------------------------------------------------------------------------

/// One parsed entry before the class list is known.
struct RawItem {
    /// The path as written in the file.
    written: String,
    positive: Vec<String>,
    unknown: Vec<String>,
    /// `line 12` (CSV) or `item 3` (JSON, 0-based), for messages.
    origin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonItem {
    path: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    unknown: Vec<String>,
}

/// Splits one CSV line into fields: `,` separates, a field wholly enclosed
/// in `"` may contain `,` and `""` (a literal quote).
fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Leading spaces before an opening quote are allowed.
        let mut field = String::new();
        while chars.peek() == Some(&' ') {
            chars.next();
            field.push(' ');
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            field.clear();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field (a quoted field must end on its line)".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            // Only spaces may follow the closing quote before the separator.
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected '{c}' after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => {
                        return Err(
                            "a '\"' inside an unquoted field (quote the whole field, doubling inner quotes)".into()
                        )
                    }
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

fn parse_csv(text: &str, file: &Path) -> Result<Vec<RawItem>> {
    let mut items = Vec::new();
    let mut seen_content = false;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let err = |msg: String| anyhow!("list file {} line {lineno}: {msg}", file.display());
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields = split_csv_line(line).map_err(err)?;
        if !seen_content {
            seen_content = true;
            let is_header = fields.len() == 2
                && fields[0].trim().eq_ignore_ascii_case("path")
                && fields[1].trim().eq_ignore_ascii_case("labels");
            if is_header {
                continue;
            }
        }
        if fields.len() > 2 {
            return Err(err(format!(
                "expected `path,label1;label2`, found {} comma-separated fields \
                 (separate labels with ';', and quote a path that contains a comma)",
                fields.len()
            )));
        }
        let path = fields[0].trim();
        if path.is_empty() {
            return Err(err("empty image path".into()));
        }
        let mut positive = Vec::new();
        let mut unknown = Vec::new();
        if let Some(labels) = fields.get(1) {
            for label in labels.split(';').map(str::trim).filter(|l| !l.is_empty()) {
                match label.strip_prefix('?') {
                    Some(rest) => {
                        let rest = rest.trim();
                        if rest.is_empty() {
                            return Err(err("a lone '?' (write '?name' to mark class name unknown)".into()));
                        }
                        unknown.push(rest.to_string());
                    }
                    None => positive.push(label.to_string()),
                }
            }
        }
        items.push(RawItem { written: path.to_string(), positive, unknown, origin: format!("line {lineno}") });
    }
    Ok(items)
}

fn parse_json(text: &str, file: &Path) -> Result<Vec<RawItem>> {
    let parsed: Vec<JsonItem> = serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "cannot parse list file {}: {e} (expected [{{\"path\": \"...\", \"labels\": [...], \"unknown\": [...]}}, ...])",
            file.display()
        )
    })?;
    let mut items = Vec::with_capacity(parsed.len());
    for (i, it) in parsed.into_iter().enumerate() {
        let origin = format!("item {i} (\"{}\")", it.path);
        if it.path.trim().is_empty() {
            bail!("list file {} item {i}: empty image path", file.display());
        }
        for l in it.labels.iter().chain(&it.unknown) {
            if l.trim().is_empty() {
                bail!("list file {} {origin}: empty label", file.display());
            }
        }
        items.push(RawItem {
            written: it.path.trim().to_string(),
            positive: it.labels.iter().map(|l| l.trim().to_string()).collect(),
            unknown: it.unknown.iter().map(|l| l.trim().to_string()).collect(),
            origin,
        });
    }
    Ok(items)
}

/// A CSV or JSON list of images with their labels (see the module docs).
pub struct ListDataset {
    file: PathBuf,
    /// Named by each path as written in the list.
    files: ImageFiles,
    skipped: SkippedImages,
}

impl ListDataset {
    /// Reads the list at `path` (JSON if the name ends in `.json`, CSV
    /// otherwise). `classes`: the class list, in label order; `None` takes
    /// the sorted union of the labels seen.
    pub fn open(path: &Path, classes: Option<Vec<String>>, options: &OpenOptions) -> Result<ListDataset> {
        let text = read_text(path, "list file")?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let raw = if is_json { parse_json(&text, path)? } else { parse_csv(&text, path)? };
        if raw.is_empty() {
            bail!("list file {} lists no image", path.display());
        }

        let explicit = classes.is_some();
        let classes = match classes {
            Some(c) => {
                validate_class_names(&c)?;
                c
            }
            None => {
                let mut all: Vec<String> =
                    raw.iter().flat_map(|r| r.positive.iter().chain(&r.unknown)).cloned().collect();
                all.sort();
                all.dedup();
                if all.is_empty() {
                    bail!(
                        "list file {} has no labels at all, so its classes cannot be inferred; give a class list",
                        path.display()
                    );
                }
                for name in &all {
                    check_class_name(name).map_err(|m| anyhow!("list file {}: {m}", path.display()))?;
                }
                all
            }
        };
        let index: std::collections::HashMap<&str, usize> =
            classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();

        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let c = classes.len();
        let mut labels = vec![NEGATIVE; raw.len() * c];
        for (row, item) in labels.chunks_exact_mut(c).zip(&raw) {
            let lookup = |name: &str| {
                index.get(name).copied().ok_or_else(|| {
                    let hint = if explicit { " (not in the class list)" } else { "" };
                    anyhow!("list file {} {}: unknown class '{name}'{hint}", path.display(), item.origin)
                })
            };
            for name in &item.positive {
                row[lookup(name)?] = POSITIVE;
            }
            for name in &item.unknown {
                let k = lookup(name)?;
                if row[k] == POSITIVE {
                    bail!(
                        "list file {} {}: class '{name}' is marked both positive and unknown",
                        path.display(),
                        item.origin
                    );
                }
                row[k] = UNKNOWN;
            }
        }

        let paths: Vec<PathBuf> = raw.iter().map(|r| folder.join(&r.written)).collect();
        let (keep, skipped) = check_images(&paths, path, options)?;
        let mut ds = ListDataset { file: path.to_path_buf(), files: ImageFiles::new(classes), skipped };
        for (((item, p), row), k) in raw.into_iter().zip(paths).zip(labels.chunks_exact(c)).zip(keep) {
            if k {
                ds.files.push(item.written, p, row);
            }
        }
        Ok(ds)
    }

    /// The file the items come from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The full path of item `index`'s image.
    pub fn image_path(&self, index: usize) -> &Path {
        &self.files.paths[index]
    }

    /// Images listed but missing on disk and dropped (with
    /// `skip_missing_images`; otherwise they are an error).
    pub fn skipped_missing_images(&self) -> &SkippedImages {
        &self.skipped
    }
}

impl FileDataset for ListDataset {
    fn describe(&self) -> String {
        format!("image list {}", self.file.display())
    }

    fn files(&self) -> &ImageFiles {
        &self.files
    }
}

#[cfg(test)]
mod tests {
    use super::split_csv_line;

    #[test]
    fn csv_fields() {
        assert_eq!(split_csv_line("a.jpg,cat;dog").unwrap(), vec!["a.jpg", "cat;dog"]);
        assert_eq!(split_csv_line("a.jpg").unwrap(), vec!["a.jpg"]);
        assert_eq!(split_csv_line("a.jpg,").unwrap(), vec!["a.jpg", ""]);
        assert_eq!(split_csv_line("\"a,b \"\"c\"\".jpg\",cat").unwrap(), vec!["a,b \"c\".jpg", "cat"]);
        assert_eq!(split_csv_line("x.jpg, \"cat\" ").unwrap(), vec!["x.jpg", "cat"]);
        assert!(split_csv_line("\"a.jpg,cat").is_err());
        assert!(split_csv_line("a\"b.jpg,cat").is_err());
        assert!(split_csv_line("\"a\"x,cat").is_err());
    }
}
