//! `sam2/modeling/memory_encoder.py`: a frame's memory, made of its image embedding and its predicted mask.
//!
//! `MemoryEncoder`: mask (sigmoid unless told otherwise) -> `MaskDownSampler` to the embedding's stride,
//! added to `pix_feat_proj(image embedding)`, two ConvNeXt blocks (`Fuser`), `out_proj` to the memory width,
//! and the sine position encoding of the result.

use burn::module::{Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, activation};

use super::config::{CXBlockConfig, FuserConfig, MaskDownSamplerConfig, MemoryEncoderConfig};
use super::position_encoding::sine_position_encoding;
use super::sam2_utils::LayerNorm2d;

/// One entry of an `nn.Sequential`. Its `Module` impl is transparent (no path segment of its own), so a
/// `Vec<SequentialItem>` has the checkpoint keys of Meta's `Sequential`: `encoder.0.weight`, `encoder.1.bias`,
/// ..., with the parameter-free GELUs keeping their indices.
#[derive(Clone, Debug)]
pub enum SequentialItem {
    Conv2d(Conv2d),
    LayerNorm2d(LayerNorm2d),
    /// Exact (erf) GELU, `nn.GELU()`.
    Gelu,
}

impl SequentialItem {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Conv2d(m) => m.forward(x),
            Self::LayerNorm2d(m) => m.forward(x),
            Self::Gelu => activation::gelu(x),
        }
    }
}

impl Module for SequentialItem {
    fn collect_devices(&self, devices: Devices) -> Devices {
        match self {
            Self::Conv2d(m) => m.collect_devices(devices),
            Self::LayerNorm2d(m) => m.collect_devices(devices),
            Self::Gelu => devices,
        }
    }

    fn fork(self, device: &Device) -> Self {
        match self {
            Self::Conv2d(m) => Self::Conv2d(m.fork(device)),
            Self::LayerNorm2d(m) => Self::LayerNorm2d(m.fork(device)),
            Self::Gelu => Self::Gelu,
        }
    }

    fn to_device(self, device: &Device) -> Self {
        match self {
            Self::Conv2d(m) => Self::Conv2d(m.to_device(device)),
            Self::LayerNorm2d(m) => Self::LayerNorm2d(m.to_device(device)),
            Self::Gelu => Self::Gelu,
        }
    }

    fn train(self) -> Self {
        match self {
            Self::Conv2d(m) => Self::Conv2d(m.train()),
            Self::LayerNorm2d(m) => Self::LayerNorm2d(m.train()),
            Self::Gelu => Self::Gelu,
        }
    }

    fn valid(&self) -> Self {
        match self {
            Self::Conv2d(m) => Self::Conv2d(m.valid()),
            Self::LayerNorm2d(m) => Self::LayerNorm2d(m.valid()),
            Self::Gelu => Self::Gelu,
        }
    }

    fn materialize(self) -> Self {
        match self {
            Self::Conv2d(m) => Self::Conv2d(m.materialize()),
            Self::LayerNorm2d(m) => Self::LayerNorm2d(m.materialize()),
            Self::Gelu => Self::Gelu,
        }
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        match self {
            Self::Conv2d(m) => m.visit(visitor),
            Self::LayerNorm2d(m) => m.visit(visitor),
            Self::Gelu => {}
        }
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        match self {
            Self::Conv2d(m) => Self::Conv2d(m.map(mapper)),
            Self::LayerNorm2d(m) => Self::LayerNorm2d(m.map(mapper)),
            Self::Gelu => Self::Gelu,
        }
    }
}

impl ModuleDisplayDefault for SequentialItem {
    fn content(&self, content: Content) -> Option<Content> {
        match self {
            Self::Conv2d(m) => m.content(content),
            Self::LayerNorm2d(m) => m.content(content),
            Self::Gelu => content.set_top_level_type("Gelu").optional(),
        }
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl ModuleDisplay for SequentialItem {}

/// `MaskDownSampler`: `num_layers` x (conv `kernel_size`/`stride`/`padding`, LayerNorm2d, GELU), the channels
/// growing 1 -> stride² -> stride⁴ ..., then a 1x1 conv to `embed_dim`.
#[derive(Module, Debug)]
pub struct MaskDownSampler {
    pub encoder: Vec<SequentialItem>,
}

impl MaskDownSampler {
    pub fn new(config: &MaskDownSamplerConfig, device: &Device) -> Self {
        let mut encoder = Vec::new();
        let (mut c_in, mut c_out) = (1, 1);
        let k = config.kernel_size;
        for _ in 0..config.num_layers() {
            c_out = c_in * config.stride * config.stride;
            let p = config.padding;
            let conv = Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([config.stride; 2])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p));
            encoder.push(SequentialItem::Conv2d(conv.init(device)));
            encoder.push(SequentialItem::LayerNorm2d(LayerNorm2d::new(c_out, device)));
            encoder.push(SequentialItem::Gelu);
            c_in = c_out;
        }
        encoder.push(SequentialItem::Conv2d(Conv2dConfig::new([c_out, config.embed_dim], [1, 1]).init(device)));
        Self { encoder }
    }

    /// `[B, 1, S, S]` -> `[B, embed_dim, S / total_stride, S / total_stride]`.
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for item in &self.encoder {
            x = item.forward(x);
        }
        x
    }
}

/// `CXBlock` (ConvNeXt block, Meta's channels-last variant): 7x7 depthwise conv, LayerNorm2d, Linear x4,
/// GELU, Linear back, layer scale `gamma`, residual.
#[derive(Module, Debug)]
pub struct CXBlock {
    pub dwconv: Conv2d,
    pub norm: LayerNorm2d,
    pub pwconv1: Linear,
    pub pwconv2: Linear,
    pub gamma: Option<Param<Tensor<1>>>,
}

impl CXBlock {
    pub fn new(config: &CXBlockConfig, device: &Device) -> Self {
        let (dim, k, p) = (config.dim, config.kernel_size, config.padding);
        let groups = if config.use_dwconv { dim } else { 1 };
        let dwconv = Conv2dConfig::new([dim, dim], [k, k])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups)
            .init(device);
        let gamma = (config.layer_scale_init_value > 0.0).then(|| {
            Param::from_tensor(Tensor::ones([dim], device).mul_scalar(config.layer_scale_init_value))
        });
        Self {
            dwconv,
            norm: LayerNorm2d::new(dim, device),
            pwconv1: LinearConfig::new(dim, 4 * dim).init(device),
            pwconv2: LinearConfig::new(4 * dim, dim).init(device),
            gamma,
        }
    }

    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = self.norm.forward(self.dwconv.forward(input.clone()));
        // (N, C, H, W) -> (N, H, W, C) for the pointwise linears, as Meta does.
        let x = x.permute([0, 2, 3, 1]);
        let x = self.pwconv2.forward(activation::gelu(self.pwconv1.forward(x)));
        let x = match &self.gamma {
            Some(g) => x * g.val().reshape([1, 1, 1, g.dims()[0]]),
            None => x,
        };
        input + x.permute([0, 3, 1, 2])
    }
}

/// `Fuser`: CXBlocks in sequence (the input projection is an identity in every official config).
#[derive(Module, Debug)]
pub struct Fuser {
    pub layers: Vec<CXBlock>,
}

impl Fuser {
    pub fn new(config: &FuserConfig, device: &Device) -> Self {
        Self { layers: (0..config.num_layers).map(|_| CXBlock::new(&config.layer, device)).collect() }
    }

    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for layer in &self.layers {
            x = layer.forward(x);
        }
        x
    }
}

/// `MemoryEncoder`.
#[derive(Module, Debug)]
pub struct MemoryEncoder {
    pub mask_downsampler: MaskDownSampler,
    pub pix_feat_proj: Conv2d,
    pub fuser: Fuser,
    /// 1x1 conv `in_dim -> out_dim`; an identity (absent) when the widths are equal.
    pub out_proj: Option<Conv2d>,
    #[module(skip)]
    num_pos_feats: usize,
    #[module(skip)]
    temperature: f32,
}

impl MemoryEncoder {
    pub fn new(config: &MemoryEncoderConfig, device: &Device) -> Self {
        let (in_dim, out_dim) = (config.in_dim, config.out_dim);
        Self {
            mask_downsampler: MaskDownSampler::new(&config.mask_downsampler, device),
            pix_feat_proj: Conv2dConfig::new([in_dim, in_dim], [1, 1]).init(device),
            fuser: Fuser::new(&config.fuser, device),
            out_proj: (out_dim != in_dim).then(|| Conv2dConfig::new([in_dim, out_dim], [1, 1]).init(device)),
            num_pos_feats: config.position_encoding.num_pos_feats,
            temperature: config.position_encoding.temperature,
        }
    }

    /// `pix_feat [B, in_dim, h, w]` (the stride-16 image embedding), `masks [B, 1, 16h, 16w]` ->
    /// `(vision_features [B, out_dim, h, w], vision_pos_enc [B, out_dim, h, w])`. SAM2Base passes masks already
    /// scaled (`sigmoid * 20 - 10`, or binarized) with `skip_mask_sigmoid = true`.
    pub fn forward(&self, pix_feat: Tensor<4>, masks: Tensor<4>, skip_mask_sigmoid: bool) -> (Tensor<4>, Tensor<4>) {
        let masks = if skip_mask_sigmoid { masks } else { activation::sigmoid(masks) };
        let masks = self.mask_downsampler.forward(masks);
        let x = self.pix_feat_proj.forward(pix_feat) + masks;
        let x = self.fuser.forward(x);
        let x = match &self.out_proj {
            Some(proj) => proj.forward(x),
            None => x,
        };
        let [b, _, h, w] = x.dims();
        let pos = self.position_encoding(h, w, &x.device());
        let pos = if b > 1 { pos.repeat_dim(0, b) } else { pos };
        (x, pos)
    }

    /// The memories' sine position encoding `[1, out_dim, h, w]`: it depends only on the map size, so it is
    /// the same for every frame.
    pub fn position_encoding(&self, h: usize, w: usize, device: &Device) -> Tensor<4> {
        sine_position_encoding(self.num_pos_feats, self.temperature, h, w, device)
    }
}
