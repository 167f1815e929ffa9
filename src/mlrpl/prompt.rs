//! Category-specific prompt learning (docs/model.md §3): category c reads
//! `[SOT] ctx_c[1..M] name_c . [EOT]` through the frozen text tower, with
//! `ctx_c` learned (one set per category, or one shared set as CoOp).

use crate::clip::tokenizer::Tokenizer;
use crate::clip::TextTower;
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::{bail, Context, Result};

/// Standard deviation of randomly initialised context vectors.
const CTX_INIT_STD: f32 = 0.02;

#[derive(Clone, Debug, PartialEq)]
pub struct PromptConfig {
    /// Context length M (ignored when `ctx_init` is given: M is its token count).
    pub n_ctx: usize,
    /// One context shared by all categories (CoOp) instead of one per category.
    pub shared_ctx: bool,
    /// Initialise the context from the token embeddings of this phrase
    /// (e.g. "a photo of a") instead of N(0, 0.02^2).
    pub ctx_init: Option<String>,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig { n_ctx: 16, shared_ctx: false, ctx_init: None }
    }
}

#[derive(Clone, Debug)]
pub struct PromptLearner {
    /// The learned context: [C, M, W], or [1, M, W] when shared.
    pub ctx: Tensor,
    /// The frozen token embeddings around the context, [C, L - M, W]: SOT,
    /// then what follows the context up to the longest EOT (L positions in
    /// all), in the tower's dtype.
    frozen: Tensor,
    /// EOT position of each category's prompt.
    eot: Vec<usize>,
}

impl PromptLearner {
    /// Tokenizes "X X ... X {name}." per category (M placeholders, as CoOp
    /// does) and keeps the frozen embeddings around the placeholders.
    pub fn new(
        text: &TextTower,
        tokenizer: &Tokenizer,
        class_names: &[String],
        config: &PromptConfig,
        rng: &mut Rng,
    ) -> Result<Self> {
        if class_names.is_empty() {
            bail!("prompt learner: no class names");
        }
        let context = text.config.context_length;
        let init_ids = match &config.ctx_init {
            Some(phrase) => {
                let ids = tokenizer.encode(phrase);
                if ids.is_empty() {
                    bail!("--ctx-init {phrase:?} has no tokens");
                }
                Some(ids)
            }
            None => None,
        };
        let n_ctx = init_ids.as_ref().map_or(config.n_ctx, Vec::len);
        if n_ctx == 0 {
            bail!("--n-ctx must be at least 1");
        }
        let placeholders = vec!["X"; n_ctx].join(" ");
        let mut tokens = Vec::with_capacity(class_names.len());
        for name in class_names {
            let prompt = format!("{placeholders} {name}.");
            if tokenizer.encode(&prompt).len() + 2 > context {
                bail!("the prompt for class {name:?} does not fit the text context of {context} tokens with {n_ctx} context vectors");
            }
            tokens.push(tokenizer.tokenize(&prompt, context)?);
        }
        let eot = TextTower::eot_positions(&tokens);
        let len = eot.iter().max().copied().unwrap_or(0) + 1;
        let classes = class_names.len();
        let width = text.config.width;
        let _no_grad = crate::autograd::no_grad();
        let embedded = text.embed(&tokens, len)?;
        let frozen =
            Tensor::concat(&[&embedded.narrow(1, 0, 1)?, &embedded.narrow(1, 1 + n_ctx, len - 1 - n_ctx)?], 1)?;
        let ctx_sets = if config.shared_ctx { 1 } else { classes };
        let device = text.token_embedding().device().clone();
        let ctx = match init_ids {
            Some(ids) => {
                let ids = Tensor::from_ids(ids, [n_ctx], &device)?;
                let phrase = text.token_embedding().index_select(&ids).context("embedding --ctx-init")?;
                phrase.reshape([1, n_ctx, width])?.broadcast_to(&[ctx_sets, n_ctx, width].into())?
            }
            None => Tensor::randn([ctx_sets, n_ctx, width], CTX_INIT_STD, rng, &device)?,
        };
        // A private copy: the broadcast phrase may share storage with the frozen table.
        let ctx = Tensor::from_vec(ctx.to_vec()?, ctx.shape().clone(), &device)?.into_parameter()?;
        Ok(PromptLearner { ctx, frozen, eot })
    }

    pub fn n_ctx(&self) -> usize {
        self.ctx.dims()[1]
    }

    pub fn eot_positions(&self) -> &[usize] {
        &self.eot
    }

    /// One text feature per category through the frozen tower: [C, D].
    pub fn text_features(&self, text: &TextTower) -> Result<Tensor> {
        text.encode_prompts(&self.frozen, &self.ctx, &self.eot)
    }
}
