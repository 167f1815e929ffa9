//! Scaled dot-product attention, `softmax(q k^T / sqrt(d) [+ causal mask]) v`,
//! over [batch, heads, len, head_dim] tensors.

use super::{check_float_operands, grads_like};
use crate::autograd;
use crate::backend::{AttentionSpec, Storage};
use crate::tensor::Tensor;
use anyhow::{bail, Result};

impl Tensor {
    /// `self` is q [B, H, Lq, D]; k and v are [B, H, Lk, D]. With `causal`,
    /// query i sees keys 0..=i only (needs Lq == Lk).
    pub fn scaled_dot_product_attention(&self, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
        let q = self;
        check_float_operands("attention", &[q, k, v])?;
        let (&[b, h, lq, d], &[kb, kh, lk, kd]) = (q.dims(), k.dims()) else {
            bail!("attention: q and k must be [B, H, L, D], got shapes {} and {}", q.shape(), k.shape());
        };
        if (b, h, d) != (kb, kh, kd) || k.shape() != v.shape() || (causal && lq != lk) {
            bail!(
                "attention: shapes q {}, k {}, v {} do not fit together{}",
                q.shape(),
                k.shape(),
                v.shape(),
                if causal { " (causal needs Lq == Lk)" } else { "" }
            );
        }
        let spec = AttentionSpec {
            batch_heads: b * h,
            q_len: lq,
            kv_len: lk,
            head_dim: d,
            causal,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let (out_storage, lse) = Storage::attention(&q.storage(), &k.storage(), &v.storage(), &spec)?;
        let out = Tensor::op_output(out_storage, q.shape().clone(), &[q, k, v]);
        let (qs, ks, vs, os) = (q.clone(), k.clone(), v.clone(), out.detach());
        autograd::record(&out, &[q, k, v], move |g, _| {
            let (dq, dk, dv) = Storage::attention_backward(
                &qs.storage(),
                &ks.storage(),
                &vs.storage(),
                &os.storage(),
                &lse,
                &g.storage(),
                &spec,
            )?;
            grads_like(vec![dq, dk, dv], &[&qs, &ks, &vs])
        });
        Ok(out)
    }
}
