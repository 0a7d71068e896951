//! Convolutions, channels-last: [`Conv1d`] (`[.., L, C]`), [`Conv2d`] (`[.., H, W, C]`)
//! and [`ConvTranspose2d`], with Flax's semantics and defaults.

use crate::init::{self, Initializer};
use kiln::lax::{self, ConvParams};
use kiln::{Array, DType, Tree, random};

/// Padding of a convolution or pooling window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding.
    Valid,
    /// Pad so that `out = ceil(in / stride)` (more on the high side when odd), like XLA.
    Same,
    /// Explicit `(low, high)` padding per spatial dim.
    Explicit(Vec<(i64, i64)>),
}

impl Padding {
    /// The `(low, high)` pads for input sizes `input`, effective (dilated) window sizes
    /// `window` and `strides`.
    pub fn pads(&self, input: &[usize], window: &[usize], strides: &[usize]) -> Vec<(i64, i64)> {
        match self {
            Padding::Valid => vec![(0, 0); input.len()],
            Padding::Same => input
                .iter()
                .zip(window)
                .zip(strides)
                .map(|((&i, &k), &s)| {
                    let out = i.div_ceil(s);
                    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(i) as i64;
                    (total / 2, total - total / 2)
                })
                .collect(),
            Padding::Explicit(p) => {
                assert_eq!(p.len(), input.len(), "explicit padding needs one pair per spatial dim");
                p.clone()
            }
        }
    }
}

/// Configuration of a convolution with `N` spatial dims (see [`Conv2d::new`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvConfig<const N: usize> {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Window size per spatial dim.
    pub kernel_size: [usize; N],
    /// Strides (default 1).
    pub strides: [usize; N],
    /// Padding (default [`Padding::Same`], as in Flax).
    pub padding: Padding,
    /// Kernel dilation (default 1).
    pub dilation: [usize; N],
    /// Feature groups (default 1); both channel counts must be divisible by it.
    pub groups: usize,
    /// Whether to add a bias (default `true`).
    pub use_bias: bool,
    /// Kernel initializer (default [`init::lecun_normal`]).
    pub kernel_init: Initializer,
    /// Bias initializer (default zeros).
    pub bias_init: Initializer,
    /// Parameter dtype (default `f32`).
    pub dtype: DType,
}

impl<const N: usize> ConvConfig<N> {
    /// Defaults: stride 1, SAME padding, no dilation, one group, bias, lecun-normal kernel.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: [usize; N]) -> Self {
        ConvConfig {
            in_channels,
            out_channels,
            kernel_size,
            strides: [1; N],
            padding: Padding::Same,
            dilation: [1; N],
            groups: 1,
            use_bias: true,
            kernel_init: init::lecun_normal(),
            bias_init: Initializer::Zeros,
            dtype: DType::F32,
        }
    }

    /// Sets the strides.
    pub fn strides(mut self, strides: [usize; N]) -> Self {
        self.strides = strides;
        self
    }

    /// Sets the padding.
    pub fn padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the kernel dilation.
    pub fn dilation(mut self, dilation: [usize; N]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of feature groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets whether to add a bias.
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    #[track_caller]
    fn params(&self, key: &Array) -> (Array, Option<Array>) {
        assert!(
            self.groups > 0
                && self.in_channels.is_multiple_of(self.groups)
                && self.out_channels.is_multiple_of(self.groups),
            "conv: channels {} -> {} are not divisible by groups = {}",
            self.in_channels,
            self.out_channels,
            self.groups
        );
        let (kw, kb) = random::split2(key);
        let mut shape = self.kernel_size.to_vec();
        shape.extend([self.in_channels / self.groups, self.out_channels]);
        let kernel = self.kernel_init.init(&kw, &shape, self.dtype);
        let bias =
            self.use_bias.then(|| self.bias_init.init(&kb, &[self.out_channels], self.dtype));
        (kernel, bias)
    }
}

/// Runs `f` on `x [.., spatial (n dims), C]` reshaped to one batch dim, and restores the
/// leading dims on the result.
fn with_batch(x: &Array, n: usize, op: &str, f: impl FnOnce(&Array) -> Array) -> Array {
    let nd = x.ndim();
    assert!(nd > n, "{op}: input {:?} needs {n} spatial dims and a channel dim", x.shape());
    let lead = &x.shape()[..nd - n - 1];
    let b: usize = lead.iter().product();
    let mut shape = vec![b];
    shape.extend_from_slice(&x.shape()[nd - n - 1..]);
    let y = f(&x.reshape(&shape));
    let mut out = lead.to_vec();
    out.extend_from_slice(&y.shape()[1..]);
    y.reshape(&out)
}

#[allow(clippy::too_many_arguments)] // reason: the private core shared by every convolution
fn conv_nd(
    x: &Array,
    kernel: &Array,
    bias: Option<&Array>,
    strides: &[usize],
    padding: &Padding,
    lhs_dilation: &[usize],
    rhs_dilation: &[usize],
    groups: usize,
    op: &str,
) -> Array {
    let n = strides.len();
    let y = with_batch(x, n, op, |x| {
        let spatial = &x.shape()[1..=n];
        let ks = &kernel.shape()[..n];
        let eff: Vec<usize> = ks.iter().zip(rhs_dilation).map(|(&k, &d)| (k - 1) * d + 1).collect();
        let params = ConvParams {
            strides: strides.to_vec(),
            padding: padding.pads(spatial, &eff, strides),
            lhs_dilation: lhs_dilation.to_vec(),
            rhs_dilation: rhs_dilation.to_vec(),
            feature_group_count: groups,
        };
        lax::conv_general_dilated(x, kernel, &params)
    });
    match bias {
        Some(b) => y + b,
        None => y,
    }
}

macro_rules! conv_layer {
    ($Name:ident, $n:literal, $layout:literal) => {
        #[doc = concat!("A ", stringify!($n), "-d convolution on `", $layout, "` (channels last, any leading dims), Flax's `Conv`.")]
        ///
        /// `kernel` is `[spatial.., in_channels / groups, out_channels]`.
        #[derive(Clone, Debug, Tree)]
        pub struct $Name {
            /// Kernel `[spatial.., in_channels / groups, out_channels]`.
            pub kernel: Array,
            /// Bias `[out_channels]`, if any.
            pub bias: Option<Array>,
            /// Strides.
            #[tree(static)]
            pub strides: [usize; $n],
            /// Padding.
            #[tree(static)]
            pub padding: Padding,
            /// Kernel dilation.
            #[tree(static)]
            pub dilation: [usize; $n],
            /// Feature groups.
            #[tree(static)]
            pub groups: usize,
        }

        impl ConvConfig<$n> {
            /// Initializes the layer's parameters with `key`.
            pub fn init(&self, key: &Array) -> $Name {
                let (kernel, bias) = self.params(key);
                $Name {
                    kernel,
                    bias,
                    strides: self.strides,
                    padding: self.padding.clone(),
                    dilation: self.dilation,
                    groups: self.groups,
                }
            }
        }

        impl $Name {
            /// A layer with the defaults of [`ConvConfig::new`] (stride 1, SAME padding).
            pub fn new(
                key: &Array,
                in_channels: usize,
                out_channels: usize,
                kernel_size: [usize; $n],
            ) -> $Name {
                ConvConfig::new(in_channels, out_channels, kernel_size).init(key)
            }

            #[doc = concat!("`", $layout, "` -> `[.., spatial_out.., out_channels]`.")]
            #[track_caller]
            pub fn forward(&self, x: &Array) -> Array {
                conv_nd(
                    x,
                    &self.kernel,
                    self.bias.as_ref(),
                    &self.strides,
                    &self.padding,
                    &[1; $n],
                    &self.dilation,
                    self.groups,
                    stringify!($Name),
                )
            }
        }
    };
}

conv_layer!(Conv1d, 1, "[.., L, C_in]");
conv_layer!(Conv2d, 2, "[.., H, W, C_in]");

/// A transposed 2-d convolution on `[.., H, W, C_in]` (Flax's `ConvTranspose` with
/// `transpose_kernel = false`): the input is dilated by the strides and convolved with
/// the kernel `[KH, KW, C_in, C_out]`. With [`Padding::Same`] the output is `in * stride`;
/// with [`Padding::Valid`] it is `in * stride + max(k - stride, 0)`.
#[derive(Clone, Debug, Tree)]
pub struct ConvTranspose2d {
    /// Kernel `[KH, KW, C_in, C_out]`.
    pub kernel: Array,
    /// Bias `[C_out]`, if any.
    pub bias: Option<Array>,
    /// Strides (the upsampling factors).
    #[tree(static)]
    pub strides: [usize; 2],
    /// Padding ([`Padding::Explicit`] pads are applied to the dilated input).
    #[tree(static)]
    pub padding: Padding,
    /// Kernel dilation.
    #[tree(static)]
    pub dilation: [usize; 2],
}

impl ConvTranspose2d {
    /// A layer with `kernel_size`, `strides`, SAME padding, lecun-normal kernel and zero bias.
    pub fn new(
        key: &Array,
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        strides: [usize; 2],
    ) -> ConvTranspose2d {
        let cfg = ConvConfig::new(in_channels, out_channels, kernel_size);
        let (kernel, bias) = cfg.params(key);
        ConvTranspose2d { kernel, bias, strides, padding: Padding::Same, dilation: [1; 2] }
    }

    /// `[.., H, W, C_in] -> [.., H', W', C_out]`.
    #[track_caller]
    pub fn forward(&self, x: &Array) -> Array {
        let eff: Vec<usize> =
            (0..2).map(|i| (self.kernel.shape()[i] - 1) * self.dilation[i] + 1).collect();
        let pads = match &self.padding {
            Padding::Explicit(p) => p.clone(),
            p => (0..2)
                .map(|i| {
                    let (k, s) = (eff[i], self.strides[i]);
                    let (len, lo) = if *p == Padding::Same {
                        let len = k + s - 2;
                        (len, if s > k - 1 { k - 1 } else { len.div_ceil(2) })
                    } else {
                        (k + s - 2 + k.saturating_sub(s), k - 1)
                    };
                    (lo as i64, (len - lo) as i64)
                })
                .collect(),
        };
        conv_nd(
            x,
            &self.kernel,
            self.bias.as_ref(),
            &[1, 1],
            &Padding::Explicit(pads),
            &self.strides,
            &self.dilation,
            1,
            "ConvTranspose2d",
        )
    }
}
