//! Data movement: permutes, narrows and concatenations as copies of 2- to
//! 16-byte words (`kernels/layout.cu`).

use super::common::{grid_for, int, launch, IndexMap, BLOCK};
use super::device::CudaDevice;
use crate::Shape;
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr};

/// The unit a layout kernel copies. The widest word that divides the
/// contiguous run of bytes an op moves keeps every word inside one run, so
/// the copy is a gather of words with the same index map as the elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    B16,
    B32,
    B64,
    B128,
}

impl Word {
    /// The widest word dividing `run_bytes` (element sizes are 2 or 4).
    fn for_run(run_bytes: usize) -> Word {
        match run_bytes {
            b if b % 16 == 0 => Word::B128,
            b if b % 8 == 0 => Word::B64,
            b if b % 4 == 0 => Word::B32,
            _ => Word::B16,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Word::B16 => 2,
            Word::B32 => 4,
            Word::B64 => 8,
            Word::B128 => 16,
        }
    }

    /// The kernel instance for this word among `[b16, b32, b64, b128]`.
    fn pick(self, names: [&'static str; 4]) -> &'static str {
        names[self as usize]
    }
}

/// A permute of elements of `elem_bytes` as a gather of words: the output
/// dims with the innermost dims that the permutation keeps in place merged
/// into one run (counted in words), and the input strides in words.
#[derive(Debug, PartialEq)]
struct WordPermute {
    dims: Vec<usize>,
    strides: Vec<usize>,
    word: Word,
}

impl WordPermute {
    fn new(dims: &[usize], perm: &[usize], elem_bytes: usize) -> WordPermute {
        let strides = Shape::new(dims.to_vec()).strides();
        // perm[d] == d for d >= kept: those dims are copied as one run.
        let kept = perm.iter().enumerate().rev().take_while(|&(d, &p)| d == p).last().map_or(perm.len(), |(d, _)| d);
        let run_bytes = dims[kept..].iter().product::<usize>() * elem_bytes;
        let word = Word::for_run(run_bytes);
        let in_words = |elements: usize| elements * elem_bytes / word.bytes();
        let mut out_dims: Vec<usize> = perm[..kept].iter().map(|&p| dims[p]).collect();
        // Each source stride of an outer dim spans whole runs, so it is a
        // whole number of words.
        let mut in_strides: Vec<usize> = perm[..kept].iter().map(|&p| in_words(strides[p])).collect();
        if kept < perm.len() {
            out_dims.push(run_bytes / word.bytes());
            in_strides.push(1);
        }
        WordPermute { dims: out_dims, strides: in_strides, word }
    }
}

/// `buf` as bytes, for kernels that copy words of any width.
pub fn bytes_of<T>(buf: &CudaSlice<T>) -> Result<CudaView<'_, u8>> {
    // SAFETY: every byte pattern is a valid u8, and the view covers exactly
    // the buffer's bytes.
    unsafe { buf.transmute::<u8>(buf.num_bytes()) }.ok_or_else(|| anyhow!("cannot view a CUDA buffer as bytes"))
}

fn bytes_of_mut<T>(buf: &mut CudaSlice<T>) -> Result<CudaViewMut<'_, u8>> {
    let bytes = buf.num_bytes();
    // SAFETY: as in bytes_of; the kernels write whole elements' bytes.
    unsafe { buf.transmute_mut::<u8>(bytes) }.ok_or_else(|| anyhow!("cannot view a CUDA buffer as bytes"))
}

/// `x` of `shape` with its dims reordered by `perm` (a permutation of them).
pub fn permute<T: DeviceRepr>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    shape: &Shape,
    perm: &[usize],
) -> Result<CudaSlice<T>> {
    let mut out = dev.alloc::<T>(x.len())?;
    if x.is_empty() {
        return Ok(out);
    }
    let words = WordPermute::new(shape.dims(), perm, size_of::<T>());
    let map = IndexMap::new(&words.dims, &words.strides, &[])?;
    let count = words.dims.iter().product::<usize>();
    let n = int(count, "words")?;
    let kernel =
        dev.kernel("layout", words.word.pick(["permute_b16", "permute_b32", "permute_b64", "permute_b128"]))?;
    {
        let (src, mut dst) = (bytes_of(x)?, bytes_of_mut(&mut out)?);
        // SAFETY: perm is a permutation of the dims of `shape` (checked by
        // the op), so every output word maps to one word of x inside its
        // run; x and out hold `count` words of the instance's width (whole,
        // 256-byte aligned pool allocations).
        unsafe { launch!(kernel, grid_for(count, BLOCK); &src, &mut dst, &n, &map) }?;
    }
    Ok(out)
}

/// (outer, dim, inner) sizes around axis `dim`.
fn split_at_dim(shape: &Shape, dim: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    (dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product())
}

/// Geometry of one block copy, in elements:
/// `dst[o, dst_start + j, k] = src[o, src_start + j, k]`.
struct BlockCopy {
    outer: usize,
    rows: usize,
    inner: usize,
    src_rows: usize,
    src_start: usize,
    dst_rows: usize,
    dst_start: usize,
}

/// Copies `c` from `src` (bytes of elements of type `T`) into `dst`.
fn block_copy<T: DeviceRepr>(
    dev: &CudaDevice,
    src: &CudaView<'_, u8>,
    dst: &mut CudaSlice<T>,
    c: &BlockCopy,
) -> Result<()> {
    let total = c.outer * c.rows * c.inner;
    if total == 0 {
        return Ok(());
    }
    let elem_bytes = size_of::<T>();
    if c.outer * c.src_rows * c.inner * elem_bytes > src.len() || c.outer * c.dst_rows * c.inner > dst.len() {
        bail!("block copy out of bounds ({} bytes and {} elements for {} rows)", src.len(), dst.len(), c.rows);
    }
    // A row of `inner` elements is the contiguous run.
    let row_bytes = c.inner * elem_bytes;
    let word = Word::for_run(row_bytes);
    let inner_words = row_bytes / word.bytes();
    let args = [c.outer, c.rows, inner_words, c.src_rows, c.src_start, c.dst_rows, c.dst_start]
        .iter()
        .map(|&v| int(v, "layout size"))
        .collect::<Result<Vec<i32>>>()?;
    let kernel =
        dev.kernel("layout", word.pick(["block_copy_b16", "block_copy_b32", "block_copy_b64", "block_copy_b128"]))?;
    let mut dst_bytes = bytes_of_mut(dst)?;
    // SAFETY: checked just above: src holds outer * src_rows rows of
    // `inner_words` words and dst outer * dst_rows of them, and
    // src_start + rows <= src_rows, dst_start + rows <= dst_rows by
    // construction in narrow and concat.
    unsafe {
        launch!(kernel, grid_for(c.outer * c.rows * inner_words, BLOCK); src, &mut dst_bytes, &args[0], &args[1], &args[2], &args[3], &args[4], &args[5], &args[6])
    }?;
    Ok(())
}

/// Rows `start..start + len` of axis `dim` of `x`.
pub fn narrow<T: DeviceRepr>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    shape: &Shape,
    dim: usize,
    start: usize,
    len: usize,
) -> Result<CudaSlice<T>> {
    let (outer, size, inner) = split_at_dim(shape, dim);
    if start + len > size {
        bail!("narrow: rows {start}..{} of a dim of {size}", start + len);
    }
    let mut out = dev.alloc::<T>(outer * len * inner)?;
    let geometry = BlockCopy { outer, rows: len, inner, src_rows: size, src_start: start, dst_rows: len, dst_start: 0 };
    block_copy(dev, &bytes_of(x)?, &mut out, &geometry)?;
    Ok(out)
}

/// `parts` (the bytes of buffers of `T`) joined along axis `dim`, one
/// launch per part.
pub fn concat<T: DeviceRepr>(
    dev: &CudaDevice,
    parts: &[CudaView<'_, u8>],
    shapes: &[&Shape],
    dim: usize,
) -> Result<CudaSlice<T>> {
    let Some(first) = shapes.first() else { bail!("concat needs at least one tensor") };
    let total_rows: usize = shapes.iter().map(|s| s.dims()[dim]).sum();
    let (outer, _, inner) = split_at_dim(first, dim);
    let mut out = dev.alloc::<T>(outer * total_rows * inner)?;
    let mut dst_start = 0;
    for (part, shape) in parts.iter().zip(shapes) {
        let rows = shape.dims()[dim];
        let geometry = BlockCopy { outer, rows, inner, src_rows: rows, src_start: 0, dst_rows: total_rows, dst_start };
        block_copy(dev, part, &mut out, &geometry)?;
        dst_start += rows;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-major coordinates of `i` over `dims`, dotted with `strides`.
    fn offset(i: usize, dims: &[usize], strides: &[usize]) -> usize {
        let row_major = Shape::new(dims.to_vec()).strides();
        dims.iter().zip(&row_major).zip(strides).map(|((&d, &r), &s)| (i / r % d) * s).sum()
    }

    /// Elements of `elem_bytes` holding their own index, as bytes.
    fn numbered(count: usize, elem_bytes: usize) -> Vec<u8> {
        (0..count).flat_map(|i| (i as u32).to_le_bytes()[..elem_bytes].to_vec()).collect()
    }

    /// What the permute kernel computes, on the host, word by word.
    fn gather_words(src: &[u8], plan: &WordPermute) -> Vec<u8> {
        let w = plan.word.bytes();
        let count: usize = plan.dims.iter().product();
        (0..count).flat_map(|i| src[offset(i, &plan.dims, &plan.strides) * w..][..w].to_vec()).collect()
    }

    #[test]
    fn word_permutes_move_the_same_bytes_as_element_permutes() {
        let cases: [(&[usize], &[usize], usize, Word); 7] = [
            // attention heads: [b, l, h, d] -> [b, h, l, d], bf16 and f32
            (&[2, 3, 4, 64], &[0, 2, 1, 3], 2, Word::B128),
            (&[2, 5, 3, 6], &[0, 2, 1, 3], 4, Word::B64),
            // qkv split: [b, l, 3, h, d] -> [3, b, h, l, d] with odd d
            (&[2, 3, 3, 2, 5], &[2, 0, 3, 1, 4], 2, Word::B16),
            (&[2, 3, 3, 2, 5], &[2, 0, 3, 1, 4], 4, Word::B32),
            // patches: the two innermost dims stay, a run of 4 x 2 bf16
            (&[1, 3, 2, 2, 4, 2], &[0, 2, 1, 3, 4, 5], 2, Word::B128),
            // a transpose moves single elements
            (&[3, 5], &[1, 0], 4, Word::B32),
            // the identity is one run
            (&[2, 6, 2], &[0, 1, 2], 4, Word::B128),
        ];
        for (dims, perm, elem_bytes, word) in cases {
            let count: usize = dims.iter().product();
            let src = numbered(count, elem_bytes);
            let strides = Shape::new(dims.to_vec()).strides();
            let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
            let in_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
            let expected: Vec<u8> = (0..count)
                .flat_map(|i| src[offset(i, &out_dims, &in_strides) * elem_bytes..][..elem_bytes].to_vec())
                .collect();
            let plan = WordPermute::new(dims, perm, elem_bytes);
            assert_eq!(plan.word, word, "{dims:?} by {perm:?}, {elem_bytes}-byte elements");
            assert_eq!(gather_words(&src, &plan), expected, "{dims:?} by {perm:?}, {elem_bytes}-byte elements");
        }
    }

    #[test]
    fn copies_use_the_widest_word_dividing_the_run() {
        assert_eq!(Word::for_run(512 * 2), Word::B128);
        assert_eq!(Word::for_run(6 * 4), Word::B64);
        assert_eq!(Word::for_run(3 * 4), Word::B32);
        assert_eq!(Word::for_run(3 * 2), Word::B16);
        assert_eq!(Word::B64.pick(["a", "b", "c", "d"]), "c");
    }
}
