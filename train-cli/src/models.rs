//! The [`Model`] trait the trainer drives, and the built-in models of `[model] name`:
//! [`kiln_nn::Mlp`] (`mlp`), [`Cnn`] (`cnn`), [`ResNet`] (`resnet`) and [`Transformer`]
//! (`transformer`, a decoder-only character language model).
//!
//! A model is a [`Tree`] of parameters plus an explicit, non-trained [`Model::State`]
//! (BatchNorm running statistics; `()` for most models). Parameters checkpoint under
//! `params.<field path>` and the state under `model_state.<field path>`.

use kiln::Tree;
use kiln::{Array, DType, random};
use kiln_nn::{
    Activation, BatchNorm, BatchNormState, Conv2d, ConvConfig, Dropout, Embedding, Initializer,
    LayerNorm, Linear, MaxPool2d, Mlp, MultiHeadAttention, causal_mask,
};

/// A model the [`Trainer`](crate::Trainer) can train: parameters (the tree itself), a
/// non-trained state, a forward pass and a loss.
///
/// Implement it for your own module to train it with the same loop, progress bars,
/// checkpoints and resume as the built-in models (see `examples/custom_model.rs`).
pub trait Model: Tree + Clone + Send + Sync + 'static {
    /// State updated by the forward pass but not by the optimizer (BatchNorm running
    /// statistics). Use `()` when there is none.
    type State: Tree + Clone + Send + Sync + 'static;

    /// The initial state.
    fn init_state(&self) -> Self::State;

    /// Applies the model to a batch `x`: logits `[.., classes]` and the new state.
    /// `train` is `Some(key)` in training mode (the key feeds dropout) and `None` for
    /// evaluation (which must return the state unchanged).
    fn apply(&self, state: &Self::State, x: &Array, train: Option<&Array>) -> (Array, Self::State);

    /// The scalar training loss of `logits` against integer `labels` (the shape of
    /// `logits` without its last axis). Default: mean softmax cross-entropy.
    fn loss(&self, logits: &Array, labels: &Array) -> Array {
        kiln_nn::loss::softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    }

    /// Language models: `n` token ids sampled after `prompt` at `temperature` (0 = greedy).
    /// `None` (the default) for models that do not generate.
    fn generate(
        &self,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        key: &Array,
    ) -> Option<Vec<i32>> {
        let _ = (prompt, n, temperature, key);
        None
    }
}

/// `[B, ..] -> [B, prod(..)]`.
fn flatten_batch(x: &Array) -> Array {
    let b = x.shape()[0];
    let rest: usize = x.shape()[1..].iter().product();
    x.reshape([b, rest])
}

/// The MLP flattens each example (`[B, 28, 28, 1] -> [B, 784]`) and has no state.
impl Model for Mlp {
    type State = ();
    fn init_state(&self) {}
    fn apply(&self, _: &(), x: &Array, _: Option<&Array>) -> (Array, ()) {
        (self.forward(&flatten_batch(x)), ())
    }
}

/// A LeNet/VGG-style CNN on `[B, H, W, C]` images: `conv3x3 -> relu -> maxpool2` per entry
/// of `channels`, then `dense -> relu -> dense` to the classes.
#[derive(Clone, Debug, Tree)]
pub struct Cnn {
    /// The convolutions, one per stage.
    pub convs: Vec<Conv2d>,
    /// The hidden dense layer.
    pub dense: Linear,
    /// The classifier.
    pub head: Linear,
}

impl Cnn {
    /// A CNN for `[h, w, c]` inputs with `channels` conv stages, a `dense`-wide hidden
    /// layer and `classes` outputs.
    pub fn new(
        key: &Array,
        input: [usize; 3],
        channels: &[usize],
        dense: usize,
        classes: usize,
    ) -> Cnn {
        let ks = random::split_n(key, channels.len() + 2);
        let [mut h, mut w, mut c] = input;
        let mut convs = Vec::new();
        for (i, &out) in channels.iter().enumerate() {
            convs.push(Conv2d::new(&ks[i], c, out, [3, 3]));
            (h, w, c) = (h / 2, w / 2, out);
        }
        let n = channels.len();
        Cnn {
            convs,
            dense: Linear::new(&ks[n], h * w * c, dense),
            head: Linear::new(&ks[n + 1], dense, classes),
        }
    }
}

impl Model for Cnn {
    type State = ();
    fn init_state(&self) {}
    fn apply(&self, _: &(), x: &Array, _: Option<&Array>) -> (Array, ()) {
        let pool = MaxPool2d::new([2, 2]);
        let mut h = x.clone();
        for conv in &self.convs {
            h = pool.forward(&conv.forward(&h).relu());
        }
        (self.head.forward(&self.dense.forward(&flatten_batch(&h)).relu()), ())
    }
}

/// A pre-activation-free basic residual block: `conv-bn-relu-conv-bn + shortcut -> relu`.
#[derive(Clone, Debug, Tree)]
pub struct ResBlock {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// Its BatchNorm.
    pub bn1: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// Its BatchNorm.
    pub bn2: BatchNorm,
    /// 1x1 projection when the shape changes.
    pub proj: Option<Conv2d>,
}

/// The running statistics of a [`ResBlock`].
pub type ResBlockState = (BatchNormState, BatchNormState);

impl ResBlock {
    fn new(key: &Array, cin: usize, cout: usize, stride: usize) -> ResBlock {
        let ks = random::split_n(key, 3);
        let conv = |k: &Array, i: usize, s: usize| {
            ConvConfig::new(i, cout, [3, 3]).strides([s, s]).use_bias(false).init(k)
        };
        ResBlock {
            conv1: conv(&ks[0], cin, stride),
            bn1: BatchNorm::new(cout),
            conv2: conv(&ks[1], cout, 1),
            bn2: BatchNorm::new(cout),
            proj: (stride != 1 || cin != cout).then(|| {
                ConvConfig::new(cin, cout, [1, 1])
                    .strides([stride, stride])
                    .use_bias(false)
                    .init(&ks[2])
            }),
        }
    }

    fn apply(&self, s: &ResBlockState, x: &Array, train: bool) -> (Array, ResBlockState) {
        let (h, s1) = bn(&self.bn1, &s.0, &self.conv1.forward(x), train);
        let (h, s2) = bn(&self.bn2, &s.1, &self.conv2.forward(&h.relu()), train);
        let short = match &self.proj {
            Some(p) => p.forward(x),
            None => x.clone(),
        };
        ((h + short).relu(), (s1, s2))
    }
}

fn bn(layer: &BatchNorm, s: &BatchNormState, x: &Array, train: bool) -> (Array, BatchNormState) {
    if train { layer.forward_train(x, s) } else { (layer.forward_eval(x, s), s.clone()) }
}

/// A small ResNet with BatchNorm: a 3x3 stem, one stage of basic blocks per entry of
/// `widths` (stride 2 from the second stage on), global average pooling and a classifier.
#[derive(Clone, Debug, Tree)]
pub struct ResNet {
    /// The stem convolution.
    pub stem: Conv2d,
    /// The stem's BatchNorm.
    pub stem_bn: BatchNorm,
    /// The residual blocks.
    pub blocks: Vec<ResBlock>,
    /// The classifier.
    pub head: Linear,
}

/// The running statistics of a [`ResNet`].
#[derive(Clone, Debug, Tree)]
pub struct ResNetState {
    /// The stem's statistics.
    pub stem_bn: BatchNormState,
    /// Each block's statistics.
    pub blocks: Vec<ResBlockState>,
}

impl ResNet {
    /// `blocks_per_stage` blocks per entry of `widths` on `channels`-channel images.
    pub fn new(
        key: &Array,
        channels: usize,
        widths: &[usize],
        blocks_per_stage: usize,
        classes: usize,
    ) -> ResNet {
        let ks = random::split_n(key, widths.len() * blocks_per_stage + 2);
        let w0 = widths[0];
        let mut blocks = Vec::new();
        let mut cin = w0;
        for (s, &w) in widths.iter().enumerate() {
            for b in 0..blocks_per_stage {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                blocks.push(ResBlock::new(&ks[2 + blocks.len()], cin, w, stride));
                cin = w;
            }
        }
        ResNet {
            stem: ConvConfig::new(channels, w0, [3, 3]).use_bias(false).init(&ks[0]),
            stem_bn: BatchNorm::new(w0),
            blocks,
            head: Linear::new(&ks[1], cin, classes),
        }
    }
}

impl Model for ResNet {
    type State = ResNetState;
    fn init_state(&self) -> ResNetState {
        ResNetState {
            stem_bn: self.stem_bn.init_state(),
            blocks: self.blocks.iter().map(|b| (b.bn1.init_state(), b.bn2.init_state())).collect(),
        }
    }
    fn apply(&self, s: &ResNetState, x: &Array, train: Option<&Array>) -> (Array, ResNetState) {
        let train = train.is_some();
        let (h, stem_bn) = bn(&self.stem_bn, &s.stem_bn, &self.stem.forward(x), train);
        let mut h = h.relu();
        let mut states = Vec::with_capacity(self.blocks.len());
        for (b, bs) in self.blocks.iter().zip(&s.blocks) {
            let (h2, s2) = b.apply(bs, &h, train);
            h = h2;
            states.push(s2);
        }
        let pooled = h.mean_axes([1, 2], false);
        (self.head.forward(&pooled), ResNetState { stem_bn, blocks: states })
    }
}

/// One pre-LayerNorm decoder block: `x + attn(ln(x))`, then `x + mlp(ln(x))` with a GELU MLP
/// four times as wide.
#[derive(Clone, Debug, Tree)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln1: LayerNorm,
    /// Causal self-attention.
    pub attn: MultiHeadAttention,
    /// LayerNorm before the MLP.
    pub ln2: LayerNorm,
    /// MLP up-projection.
    pub fc: Linear,
    /// MLP down-projection.
    pub proj: Linear,
}

/// A decoder-only transformer language model (GPT-style) over token ids `[B, T]`:
/// token + learned position embeddings, pre-LN blocks, a final LayerNorm and a linear head
/// to the vocabulary. Returns logits `[B, T, vocab]`.
#[derive(Clone, Debug, Tree)]
pub struct Transformer {
    /// Token embedding `[vocab, d_model]`.
    pub tok_embed: Embedding,
    /// Position embedding `[context, d_model]`.
    pub pos_embed: Array,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// The output head.
    pub head: Linear,
    /// Dropout after the embeddings, the attention and the MLP (training only).
    pub dropout: Dropout,
}

/// Hyper-parameters of a [`Transformer`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Maximum sequence length.
    pub context: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dropout rate.
    pub dropout: f64,
}

impl Transformer {
    /// A model with GPT-2-style initialisation (normal(0.02) embeddings).
    pub fn new(key: &Array, c: TransformerConfig) -> Transformer {
        let ks = random::split_n(key, c.layers + 3);
        let d = c.d_model;
        let emb = Initializer::Normal { stddev: 0.02 };
        let blocks = (0..c.layers)
            .map(|i| {
                let bk = random::split_n(&ks[3 + i], 3);
                Block {
                    ln1: LayerNorm::new(d),
                    attn: MultiHeadAttention::new(&bk[0], d, c.heads),
                    ln2: LayerNorm::new(d),
                    fc: Linear::new(&bk[1], d, 4 * d),
                    proj: Linear::new(&bk[2], 4 * d, d),
                }
            })
            .collect();
        Transformer {
            tok_embed: Embedding::with_init(&ks[0], c.vocab, d, emb),
            pos_embed: emb.init(&ks[1], &[c.context, d], DType::F32),
            blocks,
            ln_f: LayerNorm::new(d),
            head: Linear::new(&ks[2], d, c.vocab),
            dropout: Dropout::new(c.dropout),
        }
    }

    /// The longest sequence the model takes.
    pub fn context(&self) -> usize {
        self.pos_embed.shape()[0]
    }

    /// Logits `[B, T, vocab]` of token ids `[B, T]` (`T <= context`); `key` enables dropout.
    pub fn forward(&self, tokens: &Array, key: Option<&Array>) -> Array {
        let t = tokens.shape()[1];
        assert!(
            t <= self.context(),
            "Transformer: {t} tokens exceed the context {}",
            self.context()
        );
        let keys = key.map(|k| random::split_n(k, 2 * self.blocks.len() + 1));
        let drop = |x: Array, i: usize| match &keys {
            Some(ks) => self.dropout.forward(&x, Some(&ks[i])),
            None => x,
        };
        let pos = self.pos_embed.slice_axis(0, 0, t as isize, 1);
        let mut h = drop(self.tok_embed.forward(tokens) + pos, 0);
        let mask = causal_mask(t);
        for (i, b) in self.blocks.iter().enumerate() {
            let a = b.attn.forward(&b.ln1.forward(&h), Some(&mask));
            h += drop(a, 2 * i + 1);
            let m = b.proj.forward(&Activation::Gelu.apply(&b.fc.forward(&b.ln2.forward(&h))));
            h += drop(m, 2 * i + 2);
        }
        self.head.forward(&self.ln_f.forward(&h))
    }

    /// Samples `n` tokens after `prompt` (ids), feeding back at most the last `context`
    /// tokens; `temperature` scales the logits (0 = greedy).
    pub fn sample(&self, prompt: &[i32], n: usize, temperature: f64, key: &Array) -> Vec<i32> {
        let mut ids = prompt.to_vec();
        let ctx = self.context();
        for i in 0..n {
            let start = ids.len().saturating_sub(ctx);
            let window = &ids[start..];
            let x = Array::from_vec(window.to_vec(), [1, window.len()]);
            let logits = self.forward(&x, None);
            let v = logits.shape()[2];
            let last = logits.slice_axis(1, -1, None, 1).reshape([v]);
            let next = if temperature <= 0.0 {
                last.argmax(-1).astype(DType::I32).item::<i32>()
            } else {
                let k = random::fold_in(key, i as u32);
                random::categorical(&k, &(last / temperature), -1).astype(DType::I32).item::<i32>()
            };
            ids.push(next);
        }
        ids[prompt.len()..].to_vec()
    }
}

impl Model for Transformer {
    type State = ();
    fn init_state(&self) {}
    fn apply(&self, _: &(), x: &Array, train: Option<&Array>) -> (Array, ()) {
        (self.forward(x, train), ())
    }
    fn generate(
        &self,
        prompt: &[i32],
        n: usize,
        temperature: f64,
        key: &Array,
    ) -> Option<Vec<i32>> {
        Some(self.sample(prompt, n, temperature, key))
    }
}
