//! `sam2/modeling/sam2_base.py`: the model root. Field names are Meta's, so checkpoint keys map one to one.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::config::Sam2Config;
use super::image_encoder::ImageEncoder;
use super::mask_decoder::MaskDecoder;

#[derive(Module, Debug)]
pub struct Sam2Base {
    pub image_encoder: ImageEncoder,
    pub sam_mask_decoder: MaskDecoder,
}

/// What `SAM2Base.forward_image` returns.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    /// `backbone_fpn`, highest resolution first, with `conv_s0`/`conv_s1` applied to levels 0 and 1.
    pub backbone_fpn: Vec<Tensor<4>>,
}

impl ImageFeatures {
    /// The stride-16 image embedding (`vision_features`).
    pub fn image_embed(&self) -> &Tensor<4> {
        self.backbone_fpn.last().expect("at least one level")
    }
}

impl Sam2Base {
    pub fn new(config: &Sam2Config, device: &Device) -> Self {
        Self {
            image_encoder: ImageEncoder::new(&config.image_encoder, device),
            sam_mask_decoder: MaskDecoder::new(config.image_encoder.neck.d_model, device),
        }
    }

    /// `forward_image`: encoder, then the mask decoder's projections of the two high-resolution levels.
    pub fn forward_image_with(&self, image: Tensor<4>, mut tap: impl FnMut(&str, &Tensor<4>)) -> ImageFeatures {
        let mut levels = self.image_encoder.forward_with(image, &mut tap);
        levels[0] = self.sam_mask_decoder.conv_s0.forward(levels[0].clone());
        levels[1] = self.sam_mask_decoder.conv_s1.forward(levels[1].clone());
        tap("high_res_feat0", &levels[0]);
        tap("high_res_feat1", &levels[1]);
        ImageFeatures { backbone_fpn: levels }
    }

    pub fn forward_image(&self, image: Tensor<4>) -> ImageFeatures {
        self.forward_image_with(image, |_, _| {})
    }
}
