//! Bicubic resize of 2-D grids, matching PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)`: half-pixel centres,
//! Keys' cubic with a = -0.75, source taps clamped to the border. Used to
//! resample positional-embedding grids; forward only.

use rayon::prelude::*;

const A: f32 = -0.75;

/// The four tap weights for fractional offset `t` in [0, 1).
fn cubic_weights(t: f32) -> [f32; 4] {
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output coordinate: the four clamped source indices and weights.
fn taps(in_len: usize, out_len: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|o| {
            let src = (o as f32 + 0.5) * scale - 0.5;
            let base = src.floor();
            let idx = |k: isize| (base as isize + k).clamp(0, in_len as isize - 1) as usize;
            ([idx(-1), idx(0), idx(1), idx(2)], cubic_weights(src - base))
        })
        .collect()
}

/// `x` holds `channels` grids of h x w; returns `channels` grids of out_h x out_w.
pub fn bicubic(x: &[f32], channels: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let rows = taps(h, out_h);
    let cols = taps(w, out_w);
    let mut out = vec![0.0; channels * out_h * out_w];
    out.par_chunks_mut(out_h * out_w).enumerate().for_each(|(c, dst)| {
        let grid = &x[c * h * w..(c + 1) * h * w];
        for (oy, (ry, wy)) in rows.iter().enumerate() {
            for (ox, (rx, wx)) in cols.iter().enumerate() {
                let mut acc = 0.0;
                for i in 0..4 {
                    let row = &grid[ry[i] * w..];
                    let horizontal: f32 = (0..4).map(|j| wx[j] * row[rx[j]]).sum();
                    acc += wy[i] * horizontal;
                }
                dst[oy * out_w + ox] = acc;
            }
        }
    });
    out
}
