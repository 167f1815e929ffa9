//! Building blocks shared by the CLIP towers and the MLR-PL model: linear
//! layers, layer norms, multi-head attention, CLIP's pre-LN residual
//! transformer, and a name -> tensor map loaded from safetensors.

mod weights;

pub use weights::WeightMap;

use crate::device::Device;
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// `x W^T + b` with PyTorch's [out, in] weight layout.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// W^T [in, out], kept beside a frozen weight on the CPU ([`Linear::new`]).
    weight_t: Option<Tensor>,
}

impl Linear {
    /// `weight` [out, in] and `bias` [out]. A frozen weight on the CPU also
    /// keeps its transpose, so that both the forward product and the input
    /// gradient multiply untransposed operands ([`Tensor::linear_frozen`]):
    /// one more copy of the weight for about twice the CPU GEMM rate on
    /// CLIP's shapes. A trainable weight changes at every step, so it keeps
    /// only itself.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        let frozen = !weight.requires_grad() && !bias.as_ref().is_some_and(Tensor::requires_grad);
        let weight_t = match (frozen, weight.device(), weight.rank()) {
            (true, Device::Cpu, 2) => {
                let _no_grad = crate::autograd::no_grad();
                Some(weight.transpose(0, 1)?)
            }
            _ => None,
        };
        Ok(Linear { weight, bias, weight_t })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight_t {
            Some(weight_t) => x.linear_frozen(&self.weight, weight_t, self.bias.as_ref()),
            None => x.linear(&self.weight, self.bias.as_ref()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    /// PyTorch's `nn.LayerNorm` default epsilon, used by CLIP.
    pub const DEFAULT_EPS: f32 = 1e-5;

    pub fn new(gamma: Tensor, beta: Tensor) -> Self {
        LayerNorm { gamma, beta, eps: Self::DEFAULT_EPS }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.gamma, &self.beta, self.eps)
    }
}

/// Multi-head self-attention with a packed q/k/v input projection, as
/// `nn.MultiheadAttention` in OpenAI's CLIP.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    /// [3W, W] weight and [3W] bias, q then k then v.
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl MultiHeadAttention {
    /// x [B, L, W] -> [B, L, W].
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        self.out_proj.forward(&self.attend(x, causal)?)
    }

    /// The heads' outputs, merged, before the output projection: [B, L, W].
    fn attend(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let &[b, l, w] = x.dims() else { bail!("attention input must be [B, L, W], got shape {}", x.shape()) };
        if w % self.heads != 0 {
            bail!("attention width {w} is not divisible by {} heads", self.heads);
        }
        let head_dim = w / self.heads;
        // [B, L, 3, H, Dh] -> [3, B, H, L, Dh]
        let qkv = self.in_proj.forward(x)?.reshape([b, l, 3, self.heads, head_dim])?.permute(&[2, 0, 3, 1, 4])?;
        let part = |i| qkv.narrow(0, i, 1)?.reshape([b, self.heads, l, head_dim]);
        let attended = part(0)?.scaled_dot_product_attention(&part(1)?, &part(2)?, causal)?;
        attended.permute(&[0, 2, 1, 3])?.reshape([b, l, w])
    }
}

/// CLIP's MLP: `c_proj(QuickGELU(c_fc(x)))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.c_proj.forward(&self.c_fc.forward(x)?.quick_gelu()?)
    }
}

/// Pre-LN block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`.
#[derive(Clone, Debug)]
pub struct ResidualBlock {
    pub ln_1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl ResidualBlock {
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let x = x.add(&self.attn.forward(&self.ln_1.forward(x)?, causal)?)?;
        self.feed_forward(&x)
    }

    /// The block's output at the flat rows `rows` (ids into the [B * L]
    /// positions) only: [R, W]. Attention still reads every position; the
    /// output projection, the residuals and the MLP run on the R rows.
    pub fn forward_rows(&self, x: &Tensor, causal: bool, rows: &Tensor) -> Result<Tensor> {
        let &[b, l, w] = x.dims() else { bail!("block input must be [B, L, W], got shape {}", x.shape()) };
        let pick = |y: &Tensor| y.reshape([b * l, w])?.index_select(rows);
        let attended = self.attn.attend(&self.ln_1.forward(x)?, causal)?;
        self.feed_forward(&pick(x)?.add(&self.attn.out_proj.forward(&pick(&attended)?)?)?)
    }

    /// `x + mlp(ln_2(x))`.
    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        x.add(&self.mlp.forward(&self.ln_2.forward(x)?)?)
    }
}

#[derive(Clone, Debug)]
pub struct Transformer {
    pub blocks: Vec<ResidualBlock>,
}

impl Transformer {
    /// Runs every block; `on_block(i, &x)` sees each block's output (for
    /// parity checks against per-block activations).
    pub fn forward_with(&self, x: &Tensor, causal: bool, mut on_block: impl FnMut(usize, &Tensor)) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, causal)?;
            on_block(i, &x);
        }
        Ok(x)
    }

    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        self.forward_with(x, causal, |_, _| {})
    }

    /// The last block's output at the flat rows `rows` only (see
    /// [`ResidualBlock::forward_rows`]): [R, W].
    pub fn forward_rows(&self, x: &Tensor, causal: bool, rows: &Tensor) -> Result<Tensor> {
        let Some((last, before)) = self.blocks.split_last() else { bail!("a transformer without blocks") };
        let x = before.iter().try_fold(x.clone(), |x, block| block.forward(&x, causal))?;
        last.forward_rows(&x, causal, rows)
    }
}
