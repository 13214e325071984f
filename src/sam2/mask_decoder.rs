//! `sam2/modeling/sam/mask_decoder.py`.
//!
//! So far only the two projections of the high-resolution features (`conv_s0`, `conv_s1`), which
//! `SAM2Base.forward_image` applies to the stride-4 and stride-8 FPN levels. The decoder proper (two-way
//! transformer, mask and IoU heads) arrives with the heads (issue 4) and will live in this file.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Device;

#[derive(Module, Debug)]
pub struct MaskDecoder {
    /// d_model -> d_model/8 on the stride-4 level.
    pub conv_s0: Conv2d,
    /// d_model -> d_model/4 on the stride-8 level.
    pub conv_s1: Conv2d,
}

impl MaskDecoder {
    pub fn new(transformer_dim: usize, device: &Device) -> Self {
        Self {
            conv_s0: Conv2dConfig::new([transformer_dim, transformer_dim / 8], [1, 1]).init(device),
            conv_s1: Conv2dConfig::new([transformer_dim, transformer_dim / 4], [1, 1]).init(device),
        }
    }
}
