//! Pooling on channels-last inputs `[.., H, W, C]` (Flax's `max_pool` / `avg_pool`).

use crate::conv::Padding;
use kiln::prim::WindowKind;
use kiln::{Array, Tree, lax};

fn pool(
    x: &Array,
    kind: WindowKind,
    window: &[usize],
    strides: &[usize],
    padding: &Padding,
    op: &str,
) -> Array {
    let n = window.len();
    let nd = x.ndim();
    assert!(nd > n, "{op}: input {:?} needs {n} spatial dims and a channel dim", x.shape());
    let lead = nd - n - 1;
    let spatial = &x.shape()[lead..nd - 1];
    let mut w = vec![1; nd];
    let mut s = vec![1; nd];
    let mut p = vec![(0, 0); nd];
    w[lead..nd - 1].copy_from_slice(window);
    s[lead..nd - 1].copy_from_slice(strides);
    p[lead..nd - 1].copy_from_slice(&padding.pads(spatial, window, strides));
    lax::reduce_window(x, kind, &w, &s, &p)
}

macro_rules! pool_layer {
    ($Name:ident, $n:literal, $layout:literal, $doc:literal, |$x:ident, $me:ident| $body:expr) => {
        #[doc = $doc]
        #[doc = concat!("\n\nInput `", $layout, "` with any leading dims. A layer without parameters.")]
        #[derive(Clone, Debug, Tree)]
        pub struct $Name {
            /// Window size per spatial dim.
            #[tree(static)]
            pub window: [usize; $n],
            /// Strides (Flax's default is 1; [`Self::new`] uses the window, as PyTorch).
            #[tree(static)]
            pub strides: [usize; $n],
            /// Padding (default VALID).
            #[tree(static)]
            pub padding: Padding,
        }

        impl $Name {
            /// Non-overlapping windows: `strides = window`, VALID padding.
            pub fn new(window: [usize; $n]) -> $Name {
                $Name { window, strides: window, padding: Padding::Valid }
            }

            /// Explicit strides and padding.
            pub fn with(window: [usize; $n], strides: [usize; $n], padding: Padding) -> $Name {
                $Name { window, strides, padding }
            }

            /// Pools the spatial dims.
            #[track_caller]
            pub fn forward(&self, $x: &Array) -> Array {
                let $me = self;
                $body
            }
        }
    };
}

pool_layer!(
    MaxPool2d,
    2,
    "[.., H, W, C]",
    "2-d max pooling (padding counts as `-inf`).",
    |x, me| pool(x, WindowKind::Max, &me.window, &me.strides, &me.padding, "MaxPool2d")
);
pool_layer!(
    AvgPool2d,
    2,
    "[.., H, W, C]",
    "2-d average pooling: the window sum divided by the window size (padding counts as 0, Flax's default).",
    |x, me| {
        let s = pool(x, WindowKind::Sum, &me.window, &me.strides, &me.padding, "AvgPool2d");
        s / (me.window.iter().product::<usize>() as f64)
    }
);
pool_layer!(MaxPool1d, 1, "[.., L, C]", "1-d max pooling.", |x, me| pool(
    x,
    WindowKind::Max,
    &me.window,
    &me.strides,
    &me.padding,
    "MaxPool1d"
));
pool_layer!(
    AvgPool1d,
    1,
    "[.., L, C]",
    "1-d average pooling (window sum divided by the window size).",
    |x, me| {
        let s = pool(x, WindowKind::Sum, &me.window, &me.strides, &me.padding, "AvgPool1d");
        s / (me.window[0] as f64)
    }
);
