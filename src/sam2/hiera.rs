//! `sam2/modeling/backbones/hieradet.py`: the Hiera trunk.
//!
//! Tensors are NHWC inside the trunk, as in Meta's code; the stage outputs are returned NCHW.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{MaxPoolOptions, PadMode};
use burn::tensor::{Device, Tensor};

use super::adapter::{LwAdapter, Peg};
use super::config::{BlockSpec, HieraConfig};
use super::interpolate::bicubic;
use super::sam2_utils::{Act, Mlp};
use super::transformer::scaled_dot_product_attention;

/// Most q/k/v values computed at once: 2^24 f32 (64 MiB). WebGPU adapters commonly bind at most 128 MiB per
/// buffer (lavapipe does), and the first pooling block's q/k/v at 1024 px would take 151 MB.
const MAX_QKV_VALUES: usize = 1 << 24;

/// Hiera's LayerNorm epsilon (`partial(nn.LayerNorm, eps=1e-6)`).
const LN_EPS: f64 = 1e-6;

/// `backbones/utils.PatchEmbed`: a 7x7 stride-4 convolution, NCHW in, NHWC out.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

impl PatchEmbed {
    pub fn new(embed_dim: usize, device: &Device) -> Self {
        let proj = Conv2dConfig::new([3, embed_dim], [7, 7])
            .with_stride([4, 4])
            .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
            .init(device);
        Self { proj }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.proj.forward(x).permute([0, 2, 3, 1])
    }
}

/// `hieradet.do_pool` with a `q_stride` max-pool, on NHWC.
fn pool_nhwc(x: Tensor<4>, stride: [usize; 2]) -> Tensor<4> {
    max_pool2d(x.permute([0, 3, 1, 2]), MaxPoolOptions::new(stride)).permute([0, 2, 3, 1])
}

/// `backbones/utils.window_partition`: zero-pads `[B, H, W, C]` to multiples of `ws` and cuts it into
/// `[B * windows, ws, ws, C]`. Returns the padded size too. Padded tokens are attended to, as in Meta's code.
pub fn window_partition(x: Tensor<4>, ws: usize) -> (Tensor<4>, [usize; 2]) {
    let [b, h, w, c] = x.dims();
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let x = if ph > 0 || pw > 0 { x.pad([(0, ph), (0, pw), (0, 0)], PadMode::Constant(0.0)) } else { x };
    let (hp, wp) = (h + ph, w + pw);
    let windows = x
        .reshape([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b * (hp / ws) * (wp / ws), ws, ws, c]);
    (windows, [hp, wp])
}

/// `backbones/utils.window_unpartition`: the inverse of [`window_partition`], cropping the padding.
pub fn window_unpartition(windows: Tensor<4>, ws: usize, [hp, wp]: [usize; 2], [h, w]: [usize; 2]) -> Tensor<4> {
    let [n, _, _, c] = windows.dims();
    let b = n / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, hp, wp, c]);
    if hp > h || wp > w { x.slice([0..b, 0..h, 0..w, 0..c]) } else { x }
}

/// `hieradet.MultiScaleAttention`: attention whose queries may be max-pooled (at a stage change).
#[derive(Module, Debug)]
pub struct MultiScaleAttention {
    pub qkv: Linear,
    pub proj: Linear,
    /// memseg's LW-Adapter in front of `qkv` (`sam2::adapter`); None in plain SAM2 and after folding.
    pub qkv_adapter: Option<LwAdapter>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    q_stride: Option<[usize; 2]>,
}

impl MultiScaleAttention {
    pub fn new(dim: usize, dim_out: usize, num_heads: usize, q_stride: Option<[usize; 2]>, device: &Device) -> Self {
        Self {
            qkv: LinearConfig::new(dim, dim_out * 3).init(device),
            proj: LinearConfig::new(dim_out, dim_out).init(device),
            qkv_adapter: None,
            num_heads,
            q_stride,
        }
    }

    /// `[B, H, W, dim]` -> `[B, H', W', dim_out]` (H' = H / q_stride when pooling). Windows are independent,
    /// so a batch whose q/k/v would exceed [`MAX_QKV_VALUES`] runs in chunks of windows.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, _] = x.dims();
        let per_window = h * w * self.qkv.weight.dims()[1];
        let chunk = (MAX_QKV_VALUES / per_window.max(1)).max(1);
        if b <= chunk {
            return self.forward_windows(x);
        }
        let chunk = b.div_ceil(b.div_ceil(chunk)); // equal chunks
        let parts = (0..b).step_by(chunk).map(|start| self.forward_windows(x.clone().narrow(0, start, chunk.min(b - start))));
        Tensor::cat(parts.collect(), 0)
    }

    fn forward_windows(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, mut h, mut w, _] = x.dims();
        let heads = self.num_heads;
        // [B, HW, 3, heads, head_dim] -> three [B, heads, HW, head_dim]
        // The adapter sees the padded windows, as `qkv` does, so that folding it into `qkv` is exact.
        let x = match &self.qkv_adapter {
            Some(adapter) => adapter.forward(x),
            None => x,
        };
        let qkv = self.qkv.forward(x).reshape([b as i32, (h * w) as i32, 3, heads as i32, -1]);
        let head_dim = qkv.dims()[4];
        let qkv = qkv.permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, heads, h * w, head_dim]);
        let (mut q, k, v) = (part(0), part(1), part(2));
        if let Some(stride) = self.q_stride {
            // Pool q over the (window's) grid, heads folded into channels as in Meta's reshape.
            let grid = q.swap_dims(1, 2).reshape([b, h, w, heads * head_dim]);
            let pooled = pool_nhwc(grid, stride);
            [h, w] = [pooled.dims()[1], pooled.dims()[2]];
            q = pooled.reshape([b, h * w, heads, head_dim]).swap_dims(1, 2);
        }
        let out = scaled_dot_product_attention(q, k, v);
        self.proj.forward(out.swap_dims(1, 2).reshape([b, h, w, heads * head_dim]))
    }
}

/// `hieradet.MultiScaleBlock`: pre-norm (windowed) attention and MLP, with a pooled, projected shortcut when
/// the width changes.
#[derive(Module, Debug)]
pub struct MultiScaleBlock {
    pub norm1: LayerNorm,
    pub attn: MultiScaleAttention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// Only when `dim != dim_out`.
    pub proj: Option<Linear>,
    /// memseg's LW-Adapter in front of `mlp.layers.0` (`sam2::adapter`); None in plain SAM2 and after folding.
    pub mlp_adapter: Option<LwAdapter>,
    #[module(skip)]
    window_size: usize,
    #[module(skip)]
    q_stride: Option<[usize; 2]>,
}

impl MultiScaleBlock {
    pub fn new(spec: &BlockSpec, q_stride: [usize; 2], mlp_ratio: usize, device: &Device) -> Self {
        let q_stride = spec.q_pool.then_some(q_stride);
        let BlockSpec { dim, dim_out, num_heads, window_size, .. } = *spec;
        Self {
            norm1: LayerNormConfig::new(dim).with_epsilon(LN_EPS).init(device),
            attn: MultiScaleAttention::new(dim, dim_out, num_heads, q_stride, device),
            norm2: LayerNormConfig::new(dim_out).with_epsilon(LN_EPS).init(device),
            mlp: Mlp::new(dim_out, dim_out * mlp_ratio, dim_out, 2, Act::Gelu, device),
            proj: (dim != dim_out).then(|| LinearConfig::new(dim, dim_out).init(device)),
            mlp_adapter: None,
            window_size,
            q_stride,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let normed = self.norm1.forward(x.clone());
        // The shortcut is taken from the *normed* input when the width changes (as in Meta's code).
        let shortcut = match (&self.proj, self.q_stride) {
            (Some(proj), Some(stride)) => pool_nhwc(proj.forward(normed.clone()), stride),
            (Some(proj), None) => proj.forward(normed.clone()),
            (None, _) => x,
        };
        let ws = self.window_size;
        let x = if ws > 0 {
            let (windows, _) = window_partition(normed, ws);
            let attended = self.attn.forward(windows);
            // After q-pooling, windows shrank by the stride; re-pad relative to the pooled map.
            let ws = ws / self.q_stride.map_or(1, |s| s[0]);
            let [_, h, w, _] = shortcut.dims();
            let padded = [h.div_ceil(ws) * ws, w.div_ceil(ws) * ws];
            window_unpartition(attended, ws, padded, [h, w])
        } else {
            self.attn.forward(normed)
        };
        let x = shortcut + x;
        let normed = self.norm2.forward(x.clone());
        let normed = match &self.mlp_adapter {
            Some(adapter) => adapter.forward(normed),
            None => normed,
        };
        x + self.mlp.forward(normed)
    }
}

/// `hieradet.Hiera`.
#[derive(Module, Debug)]
pub struct Hiera {
    pub patch_embed: PatchEmbed,
    /// Background positional embedding `[1, C, bkg_h, bkg_w]`, bicubically resized to the feature map.
    pub pos_embed: Param<Tensor<4>>,
    /// Window positional embedding `[1, C, ws0, ws0]`, tiled over the feature map.
    pub pos_embed_window: Param<Tensor<4>>,
    pub blocks: Vec<MultiScaleBlock>,
    /// memseg's convolutional position encoding generator (CPVT PEG, `sam2::adapter`), added after the
    /// absolute embedding; None in plain SAM2.
    pub peg: Option<Peg>,
    #[module(skip)]
    stage_ends: Vec<usize>,
}

impl Hiera {
    pub fn new(config: &HieraConfig, device: &Device) -> Self {
        let c = config.embed_dim;
        let [bh, bw] = config.window_pos_embed_bkg_spatial_size;
        let ws0 = config.window_spec[0];
        Self {
            patch_embed: PatchEmbed::new(c, device),
            pos_embed: Param::from_tensor(Tensor::zeros([1, c, bh, bw], device)),
            pos_embed_window: Param::from_tensor(Tensor::zeros([1, c, ws0, ws0], device)),
            blocks: config.blocks().iter().map(|s| MultiScaleBlock::new(s, config.q_stride, 4, device)).collect(),
            peg: None,
            stage_ends: config.stage_ends(),
        }
    }

    /// `Hiera._get_pos_embed`: `[1, h, w, C]`.
    pub fn pos_embed(&self, h: usize, w: usize) -> Tensor<4> {
        let resized = bicubic(self.pos_embed.val(), [h, w]);
        let window = self.pos_embed_window.val();
        let [_, _, wh, ww] = window.dims();
        (resized + window.repeat(&[1, 1, h / wh, w / ww])).permute([0, 2, 3, 1])
    }

    /// Input `[B, 3, S, S]`; returns each stage's output NCHW, highest resolution first, and calls `tap` with
    /// every intermediate (for parity tests).
    pub fn forward_with(&self, x: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<4>)) -> Vec<Tensor<4>> {
        let x = self.patch_embed.forward(x);
        tap("trunk.patch_embed", &x);
        let [_, h, w, _] = x.dims();
        let mut x = x + self.pos_embed(h, w);
        if let Some(peg) = &self.peg {
            x = peg.forward(x);
        }
        let mut outputs = Vec::with_capacity(self.stage_ends.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            tap(&format!("trunk.blocks.{i}"), &x);
            if self.stage_ends.contains(&i) {
                outputs.push(x.clone().permute([0, 3, 1, 2]));
            }
        }
        outputs
    }
}
