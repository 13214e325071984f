//! `sam2/modeling/backbones/image_encoder.py`: the FPN neck and the image encoder (trunk + neck + scalp).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use super::config::{FpnNeckConfig, ImageEncoderConfig};
use super::hiera::Hiera;
use super::position_encoding::sine_position_encoding;

/// One lateral 1x1 convolution; an `nn.Sequential` holding `conv` in Meta's code (hence the key `convs.i.conv`).
#[derive(Module, Debug)]
pub struct FpnLateral {
    pub conv: Conv2d,
}

/// `FpnNeck`: 1x1 laterals to `d_model`, nearest x2 top-down fusion (sum) on `fpn_top_down_levels` only.
#[derive(Module, Debug)]
pub struct FpnNeck {
    /// Indexed from the lowest resolution: `convs[0]` takes the stride-32 stage.
    pub convs: Vec<FpnLateral>,
    #[module(skip)]
    fpn_top_down_levels: Vec<usize>,
    #[module(skip)]
    num_pos_feats: usize,
    #[module(skip)]
    temperature: f32,
}

impl FpnNeck {
    pub fn new(config: &FpnNeckConfig, device: &Device) -> Self {
        let convs = config
            .backbone_channel_list
            .iter()
            .map(|&c| FpnLateral { conv: Conv2dConfig::new([c, config.d_model], [1, 1]).init(device) })
            .collect();
        Self {
            convs,
            fpn_top_down_levels: config.fpn_top_down_levels.clone(),
            num_pos_feats: config.num_pos_feats,
            temperature: config.temperature,
        }
    }

    /// Trunk stages (highest resolution first) -> FPN levels in the same order.
    pub fn forward(&self, xs: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let n = self.convs.len() - 1;
        let mut out: Vec<Option<Tensor<4>>> = vec![None; xs.len()];
        let mut prev: Option<Tensor<4>> = None;
        for (i, x) in xs.into_iter().enumerate().rev() {
            let lateral = self.convs[n - i].conv.forward(x);
            let fused = match prev.take() {
                Some(top) if self.fpn_top_down_levels.contains(&i) => lateral + upsample_nearest_x2(top),
                _ => lateral,
            };
            out[i] = Some(fused.clone());
            prev = Some(fused);
        }
        out.into_iter().map(|t| t.expect("every level is computed")).collect()
    }

    /// The sine position encoding of a level of this size (`neck.position_encoding(x)` in Meta's code).
    pub fn position_encoding(&self, h: usize, w: usize, device: &Device) -> Tensor<4> {
        sine_position_encoding(self.num_pos_feats, self.temperature, h, w, device)
    }
}

/// `F.interpolate(x, scale_factor=2.0, mode="nearest")`: each value repeated 2x2, with plain tensor ops (exact;
/// Burn's interpolate kernels are avoided since its bicubic one loses the device on SwiftShader's WebGPU).
fn upsample_nearest_x2(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
}

/// `ImageEncoder`: trunk, neck, then drop the `scalp` lowest-resolution levels.
#[derive(Module, Debug)]
pub struct ImageEncoder {
    pub trunk: Hiera,
    pub neck: FpnNeck,
    #[module(skip)]
    scalp: usize,
}

impl ImageEncoder {
    pub fn new(config: &ImageEncoderConfig, device: &Device) -> Self {
        Self { trunk: Hiera::new(&config.trunk, device), neck: FpnNeck::new(&config.neck, device), scalp: config.scalp }
    }

    /// `[B, 3, S, S]` -> `backbone_fpn`, highest resolution first; the last level is `vision_features`.
    pub fn forward_with(&self, x: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<4>)) -> Vec<Tensor<4>> {
        let stages = self.trunk.forward_with(x, &mut tap);
        let mut levels = self.neck.forward(stages);
        for (k, level) in levels.iter().enumerate() {
            tap(&format!("neck.feat{k}"), level);
        }
        levels.truncate(levels.len() - self.scalp);
        levels
    }
}
