//! Every op's forward against a plain f64 reference written with naive loops
//! (docs/model.md §9): relative error ||got - want|| / ||want|| <= 1e-5 for f32
//! compute, <= 2e-2 for bf16 storage against the f32-input reference; NaN
//! never passes. Inputs are fresh seeded random values, one seed per test.

mod common;

use common::*;
use mlrpl_engine::autograd::no_grad;
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{DType, Shape, Tensor};

/// Plain references: index arithmetic over row-major buffers, in f64.
mod reference {
    pub fn strides(shape: &[usize]) -> Vec<usize> {
        let mut s = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * shape[i + 1];
        }
        s
    }

    pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
        idx
    }

    pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
    }

    /// numpy: right-align, each pair equal or one of them 1.
    pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
        let rank = a.len().max(b.len());
        let get = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
        (0..rank)
            .map(|i| {
                let (x, y) = (get(a, i), get(b, i));
                assert!(x == y || x == 1 || y == 1, "reference: {a:?} and {b:?} do not broadcast");
                x.max(y)
            })
            .collect()
    }

    /// The element of `x` (of `shape`) that broadcasts to output index `out_idx`.
    pub fn broadcast_index(out_idx: &[usize], shape: &[usize]) -> usize {
        let offset = out_idx.len() - shape.len();
        let idx: Vec<usize> =
            shape.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { out_idx[d + offset] }).collect();
        ravel(&idx, shape)
    }

    pub fn binary(
        a: &[f64],
        sa: &[usize],
        b: &[f64],
        sb: &[usize],
        f: impl Fn(f64, f64) -> f64,
    ) -> (Vec<f64>, Vec<usize>) {
        let out_shape = broadcast_shape(sa, sb);
        let n: usize = out_shape.iter().product();
        let out = (0..n)
            .map(|o| {
                let idx = unravel(o, &out_shape);
                f(a[broadcast_index(&idx, sa)], b[broadcast_index(&idx, sb)])
            })
            .collect();
        (out, out_shape)
    }

    pub fn broadcast_to(x: &[f64], s: &[usize], target: &[usize]) -> Vec<f64> {
        let n: usize = target.iter().product();
        (0..n).map(|o| x[broadcast_index(&unravel(o, target), s)]).collect()
    }

    /// Sum (or mean) over `axes` (already non-negative).
    pub fn reduce(x: &[f64], s: &[usize], axes: &[usize], keepdim: bool, mean: bool) -> (Vec<f64>, Vec<usize>) {
        let kept: Vec<usize> = s.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
        let mut out = vec![0.0; kept.iter().product()];
        for (i, &v) in x.iter().enumerate() {
            let mut idx = unravel(i, s);
            for &a in axes {
                idx[a] = 0;
            }
            out[ravel(&idx, &kept)] += v;
        }
        if mean {
            let count: usize = axes.iter().map(|&a| s[a]).product();
            out.iter_mut().for_each(|v| *v /= count as f64);
        }
        let shape = if keepdim {
            kept
        } else {
            s.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect()
        };
        (out, shape)
    }

    /// Sums `x` down to `target` (right-aligned, 1 or absent where summed).
    pub fn sum_to(x: &[f64], s: &[usize], target: &[usize]) -> Vec<f64> {
        let mut out = vec![0.0; target.iter().product()];
        for (i, &v) in x.iter().enumerate() {
            out[broadcast_index(&unravel(i, s), target)] += v;
        }
        out
    }

    pub fn permute(x: &[f64], s: &[usize], perm: &[usize]) -> (Vec<f64>, Vec<usize>) {
        let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
        let out = (0..x.len())
            .map(|o| {
                let oi = unravel(o, &out_shape);
                let mut ii = vec![0; s.len()];
                for (d, &p) in perm.iter().enumerate() {
                    ii[p] = oi[d];
                }
                x[ravel(&ii, s)]
            })
            .collect();
        (out, out_shape)
    }

    pub fn narrow(x: &[f64], s: &[usize], dim: usize, start: usize, len: usize) -> (Vec<f64>, Vec<usize>) {
        let mut out_shape = s.to_vec();
        out_shape[dim] = len;
        let n: usize = out_shape.iter().product();
        let out = (0..n)
            .map(|o| {
                let mut idx = unravel(o, &out_shape);
                idx[dim] += start;
                x[ravel(&idx, s)]
            })
            .collect();
        (out, out_shape)
    }

    pub fn concat(parts: &[(&[f64], &[usize])], dim: usize) -> (Vec<f64>, Vec<usize>) {
        let mut out_shape = parts[0].1.to_vec();
        out_shape[dim] = parts.iter().map(|(_, s)| s[dim]).sum();
        let n: usize = out_shape.iter().product();
        let out = (0..n)
            .map(|o| {
                let mut idx = unravel(o, &out_shape);
                for (x, s) in parts {
                    if idx[dim] < s[dim] {
                        return x[ravel(&idx, s)];
                    }
                    idx[dim] -= s[dim];
                }
                unreachable!()
            })
            .collect();
        (out, out_shape)
    }

    pub fn index_select(table: &[f64], cols: usize, ids: &[u32]) -> Vec<f64> {
        ids.iter().flat_map(|&i| (0..cols).map(move |c| table[i as usize * cols + c])).collect()
    }

    /// Batched matmul; a 2-D operand is shared across the other's batch.
    pub fn matmul(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
        let (ra, rb) = (sa.len(), sb.len());
        let (m, k) = (sa[ra - 2], sa[ra - 1]);
        let (k2, n) = (sb[rb - 2], sb[rb - 1]);
        assert_eq!(k, k2);
        let batch_shape = if ra > 2 { &sa[..ra - 2] } else { &sb[..rb - 2] };
        let batch: usize = batch_shape.iter().product();
        let a_shared = ra == 2;
        let b_shared = rb == 2;
        let mut out = vec![0.0; batch * m * n];
        for bi in 0..batch {
            let ao = if a_shared { 0 } else { bi * m * k };
            let bo = if b_shared { 0 } else { bi * k * n };
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0;
                    for p in 0..k {
                        acc += a[ao + i * k + p] * b[bo + p * n + j];
                    }
                    out[bi * m * n + i * n + j] = acc;
                }
            }
        }
        let mut shape = batch_shape.to_vec();
        shape.extend([m, n]);
        (out, shape)
    }

    pub fn linear(x: &[f64], in_dim: usize, w: &[f64], out_dim: usize, bias: Option<&[f64]>) -> Vec<f64> {
        let rows = x.len() / in_dim;
        let mut out = vec![0.0; rows * out_dim];
        for r in 0..rows {
            for o in 0..out_dim {
                let mut acc = bias.map_or(0.0, |b| b[o]);
                for i in 0..in_dim {
                    acc += x[r * in_dim + i] * w[o * in_dim + i];
                }
                out[r * out_dim + o] = acc;
            }
        }
        out
    }

    /// Two-pass mean and biased variance per row.
    pub fn layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
        let cols = gamma.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let mean = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for j in 0..cols {
                out.push((row[j] - mean) * rstd * gamma[j] + beta[j]);
            }
        }
        out
    }

    pub fn softmax(x: &[f64], cols: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| v / sum));
        }
        out
    }

    pub fn l2_normalize(x: &[f64], cols: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(cols) {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            out.extend(row.iter().map(|v| v / norm));
        }
        out
    }

    /// Cosine similarity over the last dim, broadcasting the leading dims.
    pub fn cosine(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
        let d = *sa.last().unwrap();
        let (la, lb) = (&sa[..sa.len() - 1], &sb[..sb.len() - 1]);
        let out_shape = broadcast_shape(la, lb);
        let n: usize = out_shape.iter().product();
        let out = (0..n)
            .map(|o| {
                let idx = unravel(o, &out_shape);
                let (ra, rb) = (broadcast_index(&idx, la), broadcast_index(&idx, lb));
                let (x, y) = (&a[ra * d..(ra + 1) * d], &b[rb * d..(rb + 1) * d]);
                let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
                let nx = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                let ny = y.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                dot / (nx * ny)
            })
            .collect();
        (out, out_shape)
    }

    /// softmax(q k^T / sqrt(d), keys j > i masked when causal) v over [bh, L, d].
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        bh: usize,
        lq: usize,
        lk: usize,
        d: usize,
        causal: bool,
    ) -> Vec<f64> {
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0.0; bh * lq * d];
        for h in 0..bh {
            for i in 0..lq {
                let qi = &q[(h * lq + i) * d..][..d];
                let scores: Vec<f64> = (0..lk)
                    .map(|j| {
                        if causal && j > i {
                            f64::NEG_INFINITY
                        } else {
                            let kj = &k[(h * lk + j) * d..][..d];
                            qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale
                        }
                    })
                    .collect();
                let p = softmax(&scores, lk);
                for j in 0..lk {
                    for c in 0..d {
                        out[(h * lq + i) * d + c] += p[j] * v[(h * lk + j) * d + c];
                    }
                }
            }
        }
        out
    }

    fn softplus(z: f64) -> f64 {
        z.max(0.0) + (-z.abs()).exp().ln_1p()
    }

    /// Mean over known labels (+1 / -1) of -log sigmoid(+-x); 0 when none known.
    pub fn masked_bce(logits: &[f64], labels: &[f64]) -> f64 {
        let mut sum = 0.0;
        let mut known = 0usize;
        for (&x, &y) in logits.iter().zip(labels) {
            if y == 1.0 {
                sum += softplus(-x); // -log sigmoid(x)
                known += 1;
            } else if y == -1.0 {
                sum += softplus(x); // -log(1 - sigmoid(x))
                known += 1;
            }
        }
        if known == 0 {
            0.0
        } else {
            sum / known as f64
        }
    }

    /// CLIP's loss on an n x n logit matrix: the mean of each row's and each
    /// column's cross-entropy against the diagonal, each term written out.
    pub fn contrastive(logits: &[f64], n: usize) -> f64 {
        let mut total = 0.0;
        for i in 0..n {
            let row: f64 = (0..n).map(|j| logits[i * n + j].exp()).sum();
            let col: f64 = (0..n).map(|j| logits[j * n + i].exp()).sum();
            total += -(logits[i * n + i].exp() / row).ln() - (logits[i * n + i].exp() / col).ln();
        }
        total / (2 * n) as f64
    }

    /// Keys' cubic convolution kernel with a = -0.75.
    fn keys(x: f64) -> f64 {
        let a = -0.75;
        let x = x.abs();
        if x <= 1.0 {
            (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
        } else if x < 2.0 {
            a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    }

    /// PyTorch upsample_bicubic2d, align_corners=False: src = (dst + 0.5) *
    /// in / out - 0.5 (not clamped), taps floor(src) - 1 ..= floor(src) + 2
    /// clamped to the border.
    pub fn bicubic(x: &[f64], c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
        let taps = |dst: usize, inp: usize, out: usize| -> Vec<(usize, f64)> {
            let src = (dst as f64 + 0.5) * inp as f64 / out as f64 - 0.5;
            let base = src.floor();
            let t = src - base;
            (-1..=2)
                .map(|k: i64| {
                    let idx = (base as i64 + k).clamp(0, inp as i64 - 1) as usize;
                    (idx, keys(t - k as f64))
                })
                .collect()
        };
        let mut out = vec![0.0; c * oh * ow];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for (iy, wy) in taps(oy, h, oh) {
                        for (ix, wx) in taps(ox, w, ow) {
                            acc += wy * wx * x[(ch * h + iy) * w + ix];
                        }
                    }
                    out[(ch * oh + oy) * ow + ox] = acc;
                }
            }
        }
        out
    }
}

use reference as r;

fn randn(rng: &mut Rng, shape: &[usize]) -> Vec<f32> {
    rng.normal_vec(numel(shape), 1.0)
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let mut rng = Rng::new(101);
    let pairs: &[(&[usize], &[usize])] = &[
        (&[4, 1, 3], &[5, 1]),
        (&[5, 1], &[4, 1, 3]),
        (&[2, 3], &[1]),
        (&[1], &[2, 3]),
        (&[3, 4], &[3, 4]),
        (&[3, 1], &[1, 4]),
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[2, 3, 1]),
    ];
    type Op = (&'static str, fn(&Tensor, &Tensor) -> anyhow::Result<Tensor>, fn(f64, f64) -> f64);
    let ops: [Op; 4] = [
        ("add", Tensor::add, |a, b| a + b),
        ("sub", Tensor::sub, |a, b| a - b),
        ("mul", Tensor::mul, |a, b| a * b),
        ("div", Tensor::div, |a, b| a / b),
    ];
    for &(sa, sb) in pairs {
        let a = randn(&mut rng, sa);
        // Denominators kept away from 0: |b| in [0.5, 2] with a random sign.
        let b: Vec<f32> = rng
            .uniform_vec(numel(sb), 0.5, 2.0)
            .into_iter()
            .map(|v| if rng.uniform() < 0.5 { -v } else { v })
            .collect();
        for (name, op, f) in &ops {
            let got = op(&tensor(a.clone(), sa), &tensor(b.clone(), sb)).unwrap();
            let (want, shape) = r::binary(&to_f64(&a), sa, &to_f64(&b), sb, f);
            assert_tensor(&format!("{name} {sa:?} {sb:?}"), &got, &want, &shape, F32_TOL);
        }
    }
    assert!(tensor(vec![0.0; 6], &[2, 3]).add(&tensor(vec![0.0; 4], &[4])).is_err());
}

#[test]
fn unary_ops_match_their_formulas() {
    let mut rng = Rng::new(102);
    let shape = [3, 17];
    let x = randn(&mut rng, &shape).iter().map(|v| v * 2.0).collect::<Vec<_>>();
    let pos = rng.uniform_vec(numel(&shape), 0.5, 3.0);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    type Case = (&'static str, bool, Box<dyn Fn(&Tensor) -> anyhow::Result<Tensor>>, Box<dyn Fn(f64) -> f64>);
    let cases: Vec<Case> = vec![
        ("neg", false, Box::new(|t| t.neg()), Box::new(|v| -v)),
        ("exp", false, Box::new(|t| t.exp()), Box::new(f64::exp)),
        ("log", true, Box::new(|t| t.log()), Box::new(f64::ln)),
        ("sqrt", true, Box::new(|t| t.sqrt()), Box::new(f64::sqrt)),
        ("tanh", false, Box::new(|t| t.tanh()), Box::new(f64::tanh)),
        ("sigmoid", false, Box::new(|t| t.sigmoid()), Box::new(sig)),
        ("quick_gelu", false, Box::new(|t| t.quick_gelu()), Box::new(move |v| v * sig(1.702 * v))),
        ("affine", false, Box::new(|t| t.affine(-1.5, 0.25)), Box::new(|v| -1.5 * v + 0.25)),
        ("scale", false, Box::new(|t| t.scale(0.3)), Box::new(|v| 0.3 * v)),
        ("clamp", false, Box::new(|t| t.clamp(-0.5, 1.25)), Box::new(|v| v.clamp(-0.5, 1.25))),
    ];
    for (name, positive, op, f) in cases {
        let input = if positive { &pos } else { &x };
        let got = op(&tensor(input.clone(), &shape)).unwrap();
        let want: Vec<f64> = input.iter().map(|&v| f(v as f64)).collect();
        assert_tensor(name, &got, &want, &shape, F32_TOL);
    }
}

#[test]
fn clamp_passes_the_gradient_inside_its_range_ends_included() {
    let x = tensor(vec![-2.0, -0.5, 0.0, 0.3, 1.0, 4.0], &[6]).into_parameter().unwrap();
    let y = x.clamp(-0.5, 1.0).unwrap();
    assert_eq!(y.to_vec().unwrap(), [-0.5, -0.5, 0.0, 0.3, 1.0, 1.0]);
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    let err = x.clamp(1.0, -1.0).unwrap_err().to_string();
    assert!(err.contains("[1, -1] is empty"), "{err}");
    assert!(x.clamp(f32::NAN, 1.0).is_err());
}

#[test]
fn reductions_over_axes_with_and_without_keepdim() {
    let mut rng = Rng::new(103);
    let shape = [3, 4, 5, 2];
    let x = randn(&mut rng, &shape);
    let x64 = to_f64(&x);
    let t = tensor(x.clone(), &shape);
    let axes_cases: &[&[isize]] = &[&[0], &[1], &[3], &[-1], &[0, 2], &[1, -1], &[0, 1, 2, 3], &[2, 0], &[]];
    for &axes in axes_cases {
        let resolved: Vec<usize> = axes.iter().map(|&a| if a < 0 { (a + 4) as usize } else { a as usize }).collect();
        for keepdim in [false, true] {
            for mean in [false, true] {
                let got = if mean { t.mean(axes, keepdim) } else { t.sum(axes, keepdim) }.unwrap();
                let (want, want_shape) = r::reduce(&x64, &shape, &resolved, keepdim, mean);
                let what = format!("{} axes {axes:?} keepdim {keepdim}", if mean { "mean" } else { "sum" });
                assert_tensor(&what, &got, &want, &want_shape, F32_TOL);
            }
        }
    }
    assert!(t.sum(&[1, 1], false).is_err(), "a repeated axis must be an error");
    assert!(t.sum(&[4], false).is_err(), "an out-of-range axis must be an error");

    let total: f64 = x64.iter().sum();
    assert_tensor("sum_all", &t.sum_all().unwrap(), &[total], &[], F32_TOL);
    assert_tensor("mean_all", &t.mean_all().unwrap(), &[total / x.len() as f64], &[], F32_TOL);

    for target in [vec![4, 1, 2], vec![2], vec![1, 4, 1, 1], vec![3, 1, 5, 2], vec![1]] {
        let got = t.sum_to(&Shape::new(target.clone())).unwrap();
        assert_tensor(&format!("sum_to {target:?}"), &got, &r::sum_to(&x64, &shape, &target), &target, F32_TOL);
    }
    let small_shape = [4, 1, 2];
    let small = randn(&mut rng, &small_shape);
    for target in [vec![3, 4, 5, 2], vec![4, 6, 2]] {
        let got = tensor(small.clone(), &small_shape).broadcast_to(&Shape::new(target.clone())).unwrap();
        let want = r::broadcast_to(&to_f64(&small), &small_shape, &target);
        assert_tensor(&format!("broadcast_to {target:?}"), &got, &want, &target, F32_TOL);
    }
}

#[test]
fn reshape_permute_transpose_move_the_right_elements() {
    let mut rng = Rng::new(104);
    let shape = [2, 3, 4, 5];
    let x = randn(&mut rng, &shape);
    let x64 = to_f64(&x);
    let t = tensor(x.clone(), &shape);
    assert_tensor("reshape", &t.reshape([6, 20]).unwrap(), &x64, &[6, 20], 0.0);
    for perm in [[0, 2, 1, 3], [3, 2, 1, 0], [1, 3, 0, 2], [0, 1, 3, 2], [2, 0, 3, 1]] {
        let (want, want_shape) = r::permute(&x64, &shape, &perm);
        assert_tensor(&format!("permute {perm:?}"), &t.permute(&perm).unwrap(), &want, &want_shape, 0.0);
    }
    let (want, want_shape) = r::permute(&x64, &shape, &[0, 3, 2, 1]);
    assert_tensor("transpose(1, -1)", &t.transpose(1, -1).unwrap(), &want, &want_shape, 0.0);
    let (want, want_shape) = r::permute(&x64, &shape, &[0, 1, 3, 2]);
    assert_tensor("transpose(-2, -1)", &t.transpose(-2, -1).unwrap(), &want, &want_shape, 0.0);
    assert!(t.permute(&[0, 1, 1, 2]).is_err());
}

#[test]
fn narrow_on_inner_and_outer_dims() {
    let mut rng = Rng::new(105);
    let shape = [3, 4, 6];
    let x = randn(&mut rng, &shape);
    let x64 = to_f64(&x);
    let t = tensor(x, &shape);
    for (dim, start, len) in [(2usize, 1usize, 3usize), (2, 5, 1), (1, 1, 2), (1, 0, 3), (0, 2, 1), (2, 0, 6)] {
        let (want, want_shape) = r::narrow(&x64, &shape, dim, start, len);
        let got = t.narrow(dim as isize, start, len).unwrap();
        assert_tensor(&format!("narrow dim {dim} {start}..{}", start + len), &got, &want, &want_shape, 0.0);
    }
    let (want, want_shape) = r::narrow(&x64, &shape, 2, 2, 3);
    assert_tensor("narrow dim -1", &t.narrow(-1, 2, 3).unwrap(), &want, &want_shape, 0.0);
    assert!(t.narrow(2, 4, 3).is_err());
}

#[test]
fn concat_of_three_parts() {
    let mut rng = Rng::new(106);
    for dim in 0..3usize {
        let mut shapes = vec![vec![2, 3, 4]; 3];
        for (i, s) in shapes.iter_mut().enumerate() {
            s[dim] = i + 1;
        }
        let values: Vec<Vec<f32>> = shapes.iter().map(|s| randn(&mut rng, s)).collect();
        let tensors: Vec<Tensor> = values.iter().zip(&shapes).map(|(v, s)| tensor(v.clone(), s)).collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let got = Tensor::concat(&refs, dim as isize).unwrap();
        let v64: Vec<Vec<f64>> = values.iter().map(|v| to_f64(v)).collect();
        let parts: Vec<(&[f64], &[usize])> =
            v64.iter().zip(&shapes).map(|(v, s)| (v.as_slice(), s.as_slice())).collect();
        let (want, want_shape) = r::concat(&parts, dim);
        assert_tensor(&format!("concat dim {dim}"), &got, &want, &want_shape, 0.0);
    }
    let a = tensor(vec![0.0; 6], &[2, 3]);
    let b = tensor(vec![0.0; 8], &[2, 4]);
    assert!(Tensor::concat(&[&a, &b], 0).is_err());
}

#[test]
fn index_select_with_repeated_ids() {
    let mut rng = Rng::new(107);
    let (rows, cols) = (7, 5);
    let table = randn(&mut rng, &[rows, cols]);
    let id_values = vec![3u32, 0, 3, 6, 1, 3];
    let got = tensor(table.clone(), &[rows, cols]).index_select(&ids(id_values.clone(), &[2, 3])).unwrap();
    let want = r::index_select(&to_f64(&table), cols, &id_values);
    assert_tensor("index_select", &got, &want, &[2, 3, cols], 0.0);
    assert!(tensor(table, &[rows, cols]).index_select(&ids(vec![7], &[1])).is_err(), "out-of-range id");
}

#[test]
fn matmul_batched_and_with_shared_operands() {
    let mut rng = Rng::new(108);
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[4, 5]),    // shared 2-D right operand
        (&[3, 4], &[2, 4, 5]),    // shared 2-D left operand
        (&[2, 3, 4], &[2, 4, 5]), // batched both sides
        (&[2, 3, 5, 4], &[2, 3, 4, 6]),
        (&[2, 3, 5, 4], &[4, 6]),
        (&[5, 4], &[2, 3, 4, 6]),
        (&[4, 70, 65], &[4, 65, 66]), // past the small-GEMM threshold
        (&[70, 65], &[3, 65, 66]),    // shared left operand, multithreaded GEMMs
        (&[3, 70, 65], &[65, 66]),    // shared right operand folded into one GEMM
        (&[1, 7], &[7, 1]),
    ];
    for &(sa, sb) in cases {
        let (a, b) = (randn(&mut rng, sa), randn(&mut rng, sb));
        let got = tensor(a.clone(), sa).matmul(&tensor(b.clone(), sb)).unwrap();
        let (want, shape) = r::matmul(&to_f64(&a), sa, &to_f64(&b), sb);
        assert_tensor(&format!("matmul {sa:?} @ {sb:?}"), &got, &want, &shape, F32_TOL);
    }
    let bad = tensor(vec![0.0; 12], &[3, 4]).matmul(&tensor(vec![0.0; 15], &[3, 5]));
    assert!(bad.is_err());
    let bad_batch = tensor(vec![0.0; 24], &[2, 3, 4]).matmul(&tensor(vec![0.0; 60], &[3, 4, 5]));
    assert!(bad_batch.is_err());
}

#[test]
fn linear_with_and_without_bias() {
    let mut rng = Rng::new(109);
    let (in_dim, out_dim) = (6, 5);
    let w = randn(&mut rng, &[out_dim, in_dim]);
    let b = randn(&mut rng, &[out_dim]);
    for x_shape in [vec![4, in_dim], vec![2, 3, in_dim], vec![2, 2, 3, in_dim]] {
        let x = randn(&mut rng, &x_shape);
        let mut out_shape = x_shape.clone();
        *out_shape.last_mut().unwrap() = out_dim;
        let xt = tensor(x.clone(), &x_shape);
        let (wt, bt) = (tensor(w.clone(), &[out_dim, in_dim]), tensor(b.clone(), &[out_dim]));
        let want = r::linear(&to_f64(&x), in_dim, &to_f64(&w), out_dim, Some(&to_f64(&b)));
        assert_tensor(
            &format!("linear+bias {x_shape:?}"),
            &xt.linear(&wt, Some(&bt)).unwrap(),
            &want,
            &out_shape,
            F32_TOL,
        );
        let want = r::linear(&to_f64(&x), in_dim, &to_f64(&w), out_dim, None);
        assert_tensor(&format!("linear {x_shape:?}"), &xt.linear(&wt, None).unwrap(), &want, &out_shape, F32_TOL);
    }
    let x = tensor(vec![0.0; 12], &[2, in_dim]);
    assert!(x.linear(&tensor(vec![0.0; 30], &[out_dim, in_dim]), Some(&tensor(vec![0.0; 4], &[4]))).is_err());
}

#[test]
fn layer_norm_matches_two_pass_reference() {
    let mut rng = Rng::new(110);
    for (shape, offset) in [(vec![4, 13], 0.0f32), (vec![2, 3, 7], 3.0), (vec![5, 33], -2.0), (vec![1, 1], 0.0)] {
        let cols = *shape.last().unwrap();
        // An offset checks the variance is not computed as E[x^2] - E[x]^2.
        let x: Vec<f32> = randn(&mut rng, &shape).iter().map(|v| v + offset).collect();
        let gamma: Vec<f32> = rng.normal_vec(cols, 0.5).iter().map(|v| v + 1.0).collect();
        let beta = rng.normal_vec(cols, 0.5);
        let got = tensor(x.clone(), &shape)
            .layer_norm(&tensor(gamma.clone(), &[cols]), &tensor(beta.clone(), &[cols]), 1e-5)
            .unwrap();
        let want = r::layer_norm(&to_f64(&x), &to_f64(&gamma), &to_f64(&beta), 1e-5);
        assert_tensor(&format!("layer_norm {shape:?}"), &got, &want, &shape, F32_TOL);
    }
}

#[test]
fn softmax_is_max_subtracted() {
    let mut rng = Rng::new(111);
    for (shape, spread) in [(vec![3, 7], 1.0f32), (vec![2, 2, 9], 3.0), (vec![4, 1], 1.0)] {
        let x: Vec<f32> = randn(&mut rng, &shape).iter().map(|v| v * spread).collect();
        let cols = *shape.last().unwrap();
        let got = tensor(x.clone(), &shape).softmax().unwrap();
        assert_tensor(&format!("softmax {shape:?}"), &got, &r::softmax(&to_f64(&x), cols), &shape, F32_TOL);
    }
    // Large logits overflow exp without the max subtraction.
    let x = vec![1000.0, 1001.0, 999.0, -1000.0, -1002.0, -1001.0];
    let got = tensor(x.clone(), &[2, 3]).softmax().unwrap();
    assert_tensor("softmax of large logits", &got, &r::softmax(&to_f64(&x), 3), &[2, 3], F32_TOL);
}

#[test]
fn l2_normalize_and_cosine_similarity() {
    let mut rng = Rng::new(112);
    let shape = [3, 4, 9];
    let x = randn(&mut rng, &shape);
    let got = tensor(x.clone(), &shape).l2_normalize().unwrap();
    assert_tensor("l2_normalize", &got, &r::l2_normalize(&to_f64(&x), 9), &shape, F32_TOL);
    // A zero row stays zero (the norm is clamped to 1e-12), never NaN.
    let mut z = randn(&mut rng, &[2, 5]);
    z[5..].fill(0.0);
    let got = tensor(z.clone(), &[2, 5]).l2_normalize().unwrap();
    assert_tensor("l2_normalize with a zero row", &got, &r::l2_normalize(&to_f64(&z), 5), &[2, 5], F32_TOL);

    for (sa, sb) in [
        (vec![3, 4, 9], vec![3, 4, 9]),
        (vec![2, 3, 9], vec![3, 9]),
        (vec![2, 1, 9], vec![5, 9]),
        (vec![9], vec![4, 9]),
    ] {
        let (a, b) = (randn(&mut rng, &sa), randn(&mut rng, &sb));
        let got = tensor(a.clone(), &sa).cosine_similarity(&tensor(b.clone(), &sb)).unwrap();
        let (want, want_shape) = r::cosine(&to_f64(&a), &sa, &to_f64(&b), &sb);
        assert_tensor(&format!("cosine {sa:?} {sb:?}"), &got, &want, &want_shape, F32_TOL);
    }
}

fn check_attention(seed: u64, b: usize, h: usize, lq: usize, lk: usize, d: usize, causal: bool) {
    let mut rng = Rng::new(seed);
    let (qs, ks) = ([b, h, lq, d], [b, h, lk, d]);
    let q: Vec<f32> = randn(&mut rng, &qs);
    let k: Vec<f32> = randn(&mut rng, &ks);
    let v: Vec<f32> = randn(&mut rng, &ks);
    let got = tensor(q.clone(), &qs)
        .scaled_dot_product_attention(&tensor(k.clone(), &ks), &tensor(v.clone(), &ks), causal)
        .unwrap();
    let want = r::attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), b * h, lq, lk, d, causal);
    assert_tensor(&format!("attention causal={causal} Lq={lq} Lk={lk}"), &got, &want, &qs, F32_TOL);
}

#[test]
fn attention_non_causal_with_different_lengths() {
    check_attention(113, 2, 3, 5, 7, 8, false);
    check_attention(114, 1, 2, 9, 4, 16, false);
    check_attention(115, 2, 1, 6, 6, 4, false);
}

#[test]
fn attention_causal_masks_future_keys() {
    check_attention(116, 2, 3, 6, 6, 8, true);
    check_attention(117, 1, 1, 1, 1, 4, true);
    // The first query may only see the first key: its output is v[0].
    let (q, k, v) = (vec![0.3f32; 2 * 4], vec![0.7f32; 2 * 4], (0..8).map(|i| i as f32).collect::<Vec<_>>());
    let s = [1, 1, 2, 4];
    let out =
        tensor(q, &s).scaled_dot_product_attention(&tensor(k, &s), &tensor(v, &s), true).unwrap().to_vec().unwrap();
    assert_eq!(&out[..4], &[0.0, 1.0, 2.0, 3.0]);
    let e = tensor(vec![0.0; 12], &[1, 1, 3, 4]);
    let f = tensor(vec![0.0; 16], &[1, 1, 4, 4]);
    assert!(e.scaled_dot_product_attention(&f, &f, true).is_err(), "causal needs Lq == Lk");
}

#[test]
fn masked_bce_means_over_known_labels() {
    let mut rng = Rng::new(118);
    let shape = [4, 6];
    let logits: Vec<f32> = randn(&mut rng, &shape).iter().map(|v| v * 3.0).collect();
    let labels: Vec<f32> = (0..24).map(|_| [1.0, -1.0, 0.0][rng.below(3)]).collect();
    assert!(labels.contains(&0.0) && labels.contains(&1.0) && labels.contains(&-1.0));
    let got = tensor(logits.clone(), &shape).masked_bce_with_logits(&tensor(labels.clone(), &shape)).unwrap();
    assert_tensor("masked_bce", &got, &[r::masked_bce(&to_f64(&logits), &to_f64(&labels))], &[], F32_TOL);

    // No known label: exactly 0, not NaN.
    let got = tensor(logits.clone(), &shape).masked_bce_with_logits(&tensor(vec![0.0; 24], &shape)).unwrap();
    assert_eq!(got.scalar().unwrap(), 0.0);

    // Extreme logits stay finite and exact.
    let x = vec![80.0, -80.0, 80.0, -80.0, 30.0, 0.0];
    let y = vec![1.0, -1.0, -1.0, 1.0, -1.0, 0.0];
    let got = tensor(x.clone(), &[2, 3]).masked_bce_with_logits(&tensor(y.clone(), &[2, 3])).unwrap();
    assert_tensor("masked_bce extreme logits", &got, &[r::masked_bce(&to_f64(&x), &to_f64(&y))], &[], F32_TOL);

    // Labels with another shape are an error.
    assert!(tensor(logits, &shape).masked_bce_with_logits(&tensor(vec![1.0; 6], &[6])).is_err());
}

#[test]
fn bicubic_resize_matches_pytorch_formula() {
    let mut rng = Rng::new(119);
    for (c, h, w, oh, ow) in
        [(2, 3, 4, 7, 5), (1, 8, 8, 5, 3), (3, 7, 7, 14, 14), (2, 4, 5, 4, 5), (1, 14, 14, 32, 32), (1, 1, 3, 2, 6)]
    {
        let x = randn(&mut rng, &[c, h, w]);
        let got = tensor(x.clone(), &[c, h, w]).bicubic_resize(oh, ow).unwrap();
        let want = r::bicubic(&to_f64(&x), c, h, w, oh, ow);
        assert_tensor(&format!("bicubic {h}x{w} -> {oh}x{ow}"), &got, &want, &[c, oh, ow], F32_TOL);
    }
    // Same size is the identity (the taps at distance 1 and 2 weigh 0).
    let x = randn(&mut rng, &[2, 5, 6]);
    let got = tensor(x.clone(), &[2, 5, 6]).bicubic_resize(5, 6).unwrap();
    assert_tensor("bicubic identity", &got, &to_f64(&x), &[2, 5, 6], 1e-7);
    // Worked by hand from Keys' kernel: upsampling [0, 1] from 2 to 4 with
    // half-pixel centres puts the sources at -0.25, 0.25, 0.75, 1.25, which
    // gives [-0.10546875, 0.2265625, 0.7734375, 1.10546875] (over- and
    // undershoot at the borders, as PyTorch's bicubic does). [[0, 1], [2, 3]]
    // is separable: out[i][j] = 2 c[i] + c[j].
    let got = tensor(vec![0.0, 1.0, 2.0, 3.0], &[1, 2, 2]).bicubic_resize(4, 4).unwrap().to_vec().unwrap();
    let col = [-0.10546875f64, 0.2265625, 0.7734375, 1.10546875];
    let want: Vec<f64> = (0..16).map(|i| 2.0 * col[i / 4] + col[i % 4]).collect();
    assert_close("bicubic 2x2 -> 4x4 ramp", &got, &want, F32_TOL);
}

#[test]
fn to_dtype_round_trips() {
    let mut rng = Rng::new(120);
    let x = randn(&mut rng, &[5, 7]);
    let t = tensor(x.clone(), &[5, 7]);
    let bf = t.to_dtype(DType::BF16).unwrap();
    assert_eq!(bf.dtype(), DType::BF16);
    let back = bf.to_dtype(DType::F32).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    let want: Vec<f64> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32() as f64).collect();
    assert_tensor("f32 -> bf16 -> f32", &back, &want, &[5, 7], 0.0);
    assert_tensor("to bf16 within bf16 rounding", &bf, &to_f64(&x), &[5, 7], 4e-3);
    assert_tensor("f32 -> f32", &t.to_dtype(DType::F32).unwrap(), &to_f64(&x), &[5, 7], 0.0);
}

/// bf16 storage, f32 compute: results within bf16 tolerance of the f32 reference.
#[test]
fn bf16_storage_stays_within_bf16_tolerance() {
    let mut rng = Rng::new(121);
    let bf = |v: &[f32], s: &[usize]| tensor_dtype(v.to_vec(), s, DType::BF16);
    let check = |what: &str, got: Tensor, want: &[f64], shape: &[usize]| {
        assert_eq!(got.dtype(), DType::BF16, "{what}: output dtype");
        assert_tensor(&format!("bf16 {what}"), &got, want, shape, BF16_TOL);
    };

    let (sa, sb) = ([2, 3, 16], [4, 16, 5]);
    let (a, b) = (randn(&mut rng, &[2, 3, 16]), randn(&mut rng, &[16, 5]));
    let (want, shape) = r::matmul(&to_f64(&a), &sa, &to_f64(&b), &[16, 5]);
    check("matmul 3-D @ 2-D", bf(&a, &sa).matmul(&bf(&b, &[16, 5])).unwrap(), &want, &shape);
    let c = randn(&mut rng, &sb);
    let a4 = randn(&mut rng, &[4, 3, 16]);
    let (want, shape) = r::matmul(&to_f64(&a4), &[4, 3, 16], &to_f64(&c), &sb);
    check("matmul 3-D @ 3-D", bf(&a4, &[4, 3, 16]).matmul(&bf(&c, &sb)).unwrap(), &want, &shape);

    let (w, bias) = (randn(&mut rng, &[8, 16]), randn(&mut rng, &[8]));
    let want = r::linear(&to_f64(&a), 16, &to_f64(&w), 8, Some(&to_f64(&bias)));
    check("linear", bf(&a, &sa).linear(&bf(&w, &[8, 16]), Some(&bf(&bias, &[8]))).unwrap(), &want, &[2, 3, 8]);

    let (x, y) = (randn(&mut rng, &[4, 1, 3]), randn(&mut rng, &[5, 1]));
    let (want, shape) = r::binary(&to_f64(&x), &[4, 1, 3], &to_f64(&y), &[5, 1], |p, q| p + q);
    check("add broadcast", bf(&x, &[4, 1, 3]).add(&bf(&y, &[5, 1])).unwrap(), &want, &shape);
    let (want, shape) = r::binary(&to_f64(&x), &[4, 1, 3], &to_f64(&y), &[5, 1], |p, q| p * q);
    check("mul broadcast", bf(&x, &[4, 1, 3]).mul(&bf(&y, &[5, 1])).unwrap(), &want, &shape);

    let x = randn(&mut rng, &[3, 4, 13]);
    let (gamma, beta) = (rng.normal_vec(13, 0.3).iter().map(|v| v + 1.0).collect::<Vec<_>>(), rng.normal_vec(13, 0.3));
    let want = r::layer_norm(&to_f64(&x), &to_f64(&gamma), &to_f64(&beta), 1e-5);
    check(
        "layer_norm",
        bf(&x, &[3, 4, 13]).layer_norm(&bf(&gamma, &[13]), &bf(&beta, &[13]), 1e-5).unwrap(),
        &want,
        &[3, 4, 13],
    );
    check("softmax", bf(&x, &[3, 4, 13]).softmax().unwrap(), &r::softmax(&to_f64(&x), 13), &[3, 4, 13]);
    check("l2_normalize", bf(&x, &[3, 4, 13]).l2_normalize().unwrap(), &r::l2_normalize(&to_f64(&x), 13), &[3, 4, 13]);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let want: Vec<f64> = x.iter().map(|&v| v as f64 * sig(1.702 * v as f64)).collect();
    check("quick_gelu", bf(&x, &[3, 4, 13]).quick_gelu().unwrap(), &want, &[3, 4, 13]);
    let (want, shape) = r::reduce(&to_f64(&x), &[3, 4, 13], &[0, 2], false, false);
    check("sum", bf(&x, &[3, 4, 13]).sum(&[0, 2], false).unwrap(), &want, &shape);

    let s = [2, 2, 6, 8];
    let (q, k, v) = (randn(&mut rng, &s), randn(&mut rng, &s), randn(&mut rng, &s));
    for causal in [false, true] {
        let want = r::attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), 4, 6, 6, 8, causal);
        let got = bf(&q, &s).scaled_dot_product_attention(&bf(&k, &s), &bf(&v, &s), causal).unwrap();
        check(&format!("attention causal={causal}"), got, &want, &s);
    }

    let table = randn(&mut rng, &[6, 5]);
    let id_values = vec![5u32, 1, 1, 0];
    let want = r::index_select(&to_f64(&table), 5, &id_values);
    check("index_select", bf(&table, &[6, 5]).index_select(&ids(id_values, &[4])).unwrap(), &want, &[4, 5]);

    let logits: Vec<f32> = randn(&mut rng, &[4, 6]).iter().map(|v| v * 2.0).collect();
    let labels: Vec<f32> = (0..24).map(|_| [1.0, -1.0, 0.0][rng.below(3)]).collect();
    let want = r::masked_bce(&to_f64(&logits), &to_f64(&labels));
    check("masked_bce", bf(&logits, &[4, 6]).masked_bce_with_logits(&tensor(labels, &[4, 6])).unwrap(), &[want], &[]);

    let grid = randn(&mut rng, &[3, 7, 7]);
    let want = r::bicubic(&to_f64(&grid), 3, 7, 7, 12, 10);
    check("bicubic", bf(&grid, &[3, 7, 7]).bicubic_resize(12, 10).unwrap(), &want, &[3, 12, 10]);
}

/// Shapes of the real model (CLIP text length 77, head width 64, width 768):
/// the multithreaded GEMM paths inside attention and linear, long rows.
#[test]
fn model_sized_shapes() {
    check_attention(123, 1, 2, 77, 77, 64, true);
    check_attention(124, 1, 2, 50, 50, 64, false);
    let mut rng = Rng::new(125);
    let (rows, width, out) = (2 * 50, 768, 96);
    let x: Vec<f32> = randn(&mut rng, &[rows, width]).iter().map(|v| v + 5.0).collect();
    let gamma: Vec<f32> = rng.normal_vec(width, 0.2).iter().map(|v| v + 1.0).collect();
    let beta = rng.normal_vec(width, 0.2);
    let got = tensor(x.clone(), &[2, 50, width])
        .layer_norm(&tensor(gamma.clone(), &[width]), &tensor(beta.clone(), &[width]), 1e-5)
        .unwrap();
    let want = r::layer_norm(&to_f64(&x), &to_f64(&gamma), &to_f64(&beta), 1e-5);
    assert_tensor("layer_norm width 768", &got, &want, &[2, 50, width], F32_TOL);
    let (w, b) = (rng.normal_vec(out * width, 0.03), rng.normal_vec(out, 0.1));
    let got = tensor(x.clone(), &[2, 50, width])
        .linear(&tensor(w.clone(), &[out, width]), Some(&tensor(b.clone(), &[out])))
        .unwrap();
    let want = r::linear(&to_f64(&x), width, &to_f64(&w), out, Some(&to_f64(&b)));
    assert_tensor("linear 768 -> 96", &got, &want, &[2, 50, out], F32_TOL);
    let got = tensor(x.clone(), &[rows, width]).softmax().unwrap();
    assert_tensor("softmax width 768", &got, &r::softmax(&to_f64(&x), width), &[rows, width], F32_TOL);
}

/// Forward ops under no_grad record nothing and give the same values.
#[test]
fn no_grad_forward_matches_and_records_nothing() {
    let mut rng = Rng::new(122);
    let x = tensor(randn(&mut rng, &[3, 5]), &[3, 5]).into_parameter().unwrap();
    let w = tensor(randn(&mut rng, &[4, 5]), &[4, 5]).into_parameter().unwrap();
    let with_grad = x.linear(&w, None).unwrap().tanh().unwrap().to_vec().unwrap();
    mlrpl_engine::autograd::clear_tape();
    let _guard = no_grad();
    let before = mlrpl_engine::autograd::tape_len();
    let out = x.linear(&w, None).unwrap().tanh().unwrap();
    assert_eq!(mlrpl_engine::autograd::tape_len(), before);
    assert!(!out.requires_grad());
    assert_eq!(out.to_vec().unwrap(), with_grad);
}

/// The decoupling scores with fc3/fc4 collapsed against docs/model.md §4
/// written literally: z = tanh(x * t) materialised, then fc3, then fc4.
#[test]
fn decoupling_scores_match_literal_fc3_fc4() {
    let mut rng = Rng::new(140);
    let (b, c, n, d) = (2, 3, 5, 6);
    let x = rng.normal_vec(b * n * d, 1.0);
    let t = rng.normal_vec(c * d, 1.0);
    let w3 = rng.normal_vec(d * d, 0.4);
    let b3 = rng.normal_vec(d, 0.3);
    let w4 = rng.normal_vec(d, 0.4);
    let b4 = rng.normal_vec(1, 0.3);
    let mut want = vec![0.0f64; b * c * n];
    for bi in 0..b {
        for ci in 0..c {
            for ni in 0..n {
                let z: Vec<f64> =
                    (0..d).map(|k| (x[(bi * n + ni) * d + k] as f64 * t[ci * d + k] as f64).tanh()).collect();
                let h: Vec<f64> =
                    (0..d).map(|o| b3[o] as f64 + (0..d).map(|i| w3[o * d + i] as f64 * z[i]).sum::<f64>()).collect();
                want[(bi * c + ci) * n + ni] = b4[0] as f64 + (0..d).map(|o| w4[o] as f64 * h[o]).sum::<f64>();
            }
        }
    }
    let u = tensor(w4.clone(), &[1, d]).matmul(&tensor(w3, &[d, d])).unwrap().reshape([d]).unwrap();
    let shift = tensor(w4, &[1, d]).matmul(&tensor(b3, &[d, 1])).unwrap().add(&tensor(b4, &[1, 1])).unwrap();
    let got = tensor(x, &[b, n, d])
        .decoupling_scores(&tensor(t, &[c, d]), &u)
        .unwrap()
        .add(&shift.reshape([1]).unwrap())
        .unwrap();
    assert_tensor("decoupling scores", &got, &want, &[b, c, n], F32_TOL);
}

#[test]
fn contrastive_loss_averages_both_cross_entropies() {
    let mut rng = Rng::new(119);
    let n = 5;
    let logits: Vec<f32> = randn(&mut rng, &[n, n]).iter().map(|v| v * 4.0).collect();
    let got = tensor(logits.clone(), &[n, n]).contrastive_loss().unwrap();
    assert_tensor("contrastive_loss", &got, &[r::contrastive(&to_f64(&logits), n)], &[], F32_TOL);

    // Logits far beyond exp's range stay finite: matching pairs at +100,
    // the rest at -100, give a loss of about 0.
    let extreme: Vec<f32> = (0..n * n).map(|i| if i % (n + 1) == 0 { 100.0 } else { -100.0 }).collect();
    let got = tensor(extreme, &[n, n]).contrastive_loss().unwrap().scalar().unwrap();
    assert!(got.is_finite() && got.abs() < 1e-6, "{got}");

    // A row-major transpose swaps the two terms and keeps the loss.
    let transposed: Vec<f32> = (0..n * n).map(|i| logits[(i % n) * n + i / n]).collect();
    let again = tensor(transposed, &[n, n]).contrastive_loss().unwrap().scalar().unwrap();
    assert!((again - r::contrastive(&to_f64(&logits), n) as f32).abs() < 1e-5);

    for bad in [vec![2, 3], vec![4], vec![0, 0]] {
        let len = bad.iter().product();
        assert!(tensor(vec![0.0; len], &bad).contrastive_loss().is_err(), "shape {bad:?} must be rejected");
    }
}

// ---------------------------------------------------------------------------
// Fused decoupling cross-attention (issue 16, part 2).

/// The fused op against docs/model.md §4 in f64 (scores, shift, softmax over
/// positions, weighted sum of the patches) and against the same through
/// the separate ops (scores, softmax, matmul), on shapes off every tile.
#[test]
fn decoupling_attention_matches_softmax_of_scores_times_patches() {
    let mut rng = Rng::new(150);
    for (b, c, n, d, e) in [(2, 3, 5, 6, 4), (1, 1, 33, 7, 5), (2, 9, 3, 33, 2)] {
        let x = rng.normal_vec(b * n * d, 1.0);
        let t = rng.normal_vec(c * d, 1.0);
        let u = rng.normal_vec(d, 0.5);
        let shift = rng.normal_vec(1, 1.0);
        let patches = rng.normal_vec(b * n * e, 1.0);
        let mut want = vec![0.0f64; b * c * e];
        for bi in 0..b {
            for ci in 0..c {
                let s: Vec<f64> = (0..n)
                    .map(|ni| {
                        let term =
                            |k: usize| u[k] as f64 * (x[(bi * n + ni) * d + k] as f64 * t[ci * d + k] as f64).tanh();
                        shift[0] as f64 + (0..d).map(term).sum::<f64>()
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.iter().map(|v| (v - max).exp()).sum();
                for (ni, sv) in s.iter().enumerate() {
                    let p = (sv - max).exp() / total;
                    for j in 0..e {
                        want[(bi * c + ci) * e + j] += p * patches[(bi * n + ni) * e + j] as f64;
                    }
                }
            }
        }
        let (xt, tt, ut, st, pt) = (
            tensor(x, &[b, n, d]),
            tensor(t, &[c, d]),
            tensor(u, &[d]),
            tensor(shift, &[1]),
            tensor(patches, &[b, n, e]),
        );
        let fused = xt.decoupling_attention(&tt, &ut, &st, &pt).unwrap();
        assert_tensor("decoupling_attention", &fused, &want, &[b, c, e], F32_TOL);
        let unfused = xt.decoupling_scores(&tt, &ut).unwrap().add(&st).unwrap().softmax().unwrap().matmul(&pt).unwrap();
        assert_tensor(
            "decoupling_attention vs separate ops",
            &fused,
            &to_f64(&unfused.to_vec().unwrap()),
            &[b, c, e],
            F32_TOL,
        );
    }
}

#[test]
fn decoupling_attention_refuses_bad_shapes_and_dtypes() {
    let z = |shape: &[usize]| tensor(vec![0.5; shape.iter().product()], shape);
    let (x, t, u, s, p) = (z(&[2, 3, 4]), z(&[5, 4]), z(&[4]), z(&[1]), z(&[2, 3, 6]));
    assert!(x.decoupling_attention(&t, &u, &s, &p).is_ok());
    let cases = [
        ("t width", x.decoupling_attention(&z(&[5, 3]), &u, &s, &p)),
        ("u width", x.decoupling_attention(&t, &z(&[3]), &s, &p)),
        ("shift of two", x.decoupling_attention(&t, &u, &z(&[2]), &p)),
        ("patch batch", x.decoupling_attention(&t, &u, &s, &z(&[1, 3, 6]))),
        ("patch positions", x.decoupling_attention(&t, &u, &s, &z(&[2, 2, 6]))),
        ("no position", z(&[2, 0, 4]).decoupling_attention(&t, &u, &s, &z(&[2, 0, 6]))),
        ("bf16", x.to_dtype(DType::BF16).unwrap().decoupling_attention(&t, &u, &s, &p)),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what).to_string();
        assert!(err.starts_with("decoupling_attention:"), "{what}: {err}");
    }
}
