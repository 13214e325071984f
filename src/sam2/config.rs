//! SAM2 configuration as data, mirroring the Hydra YAML files in Meta's `sam2/configs/`.
//!
//! Field names follow the YAML keys (`model.image_encoder.trunk.embed_dim` is
//! `image_encoder.trunk.embed_dim` here), so Meta's overrides apply with [`Sam2Config::apply_override`].
//! Everything the model builds is derived from these numbers; nothing is tied to 1024x1024.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sam2Config {
    /// Side of the square model input (`model.image_size`); a multiple of 32.
    pub image_size: usize,
    pub image_encoder: ImageEncoderConfig,
    pub memory_attention: MemoryAttentionConfig,
    pub memory_encoder: MemoryEncoderConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageEncoderConfig {
    /// How many of the lowest-resolution FPN levels to drop after the neck (SAM2 drops stride 32).
    pub scalp: usize,
    pub trunk: HieraConfig,
    pub neck: FpnNeckConfig,
}

/// `sam2.modeling.backbones.hieradet.Hiera`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HieraConfig {
    pub embed_dim: usize,
    pub num_heads: usize,
    /// Number of stage transitions that pool the queries.
    pub q_pool: usize,
    pub q_stride: [usize; 2],
    /// Blocks per stage.
    pub stages: Vec<usize>,
    pub dim_mul: usize,
    pub head_mul: usize,
    /// Size of the background positional embedding, interpolated to the feature map.
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    /// Window size per stage (0 = global attention).
    pub window_spec: Vec<usize>,
    /// Blocks with global attention.
    pub global_att_blocks: Vec<usize>,
}

/// `sam2.modeling.backbones.image_encoder.FpnNeck` with its sine position encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FpnNeckConfig {
    pub d_model: usize,
    /// Trunk channels from the lowest resolution to the highest.
    pub backbone_channel_list: Vec<usize>,
    /// Levels (0 = stride 4) that receive top-down features; the others are lateral only.
    pub fpn_top_down_levels: Vec<usize>,
    /// `position_encoding.num_pos_feats`.
    pub num_pos_feats: usize,
    pub temperature: f32,
}

/// `sam2.modeling.memory_attention.MemoryAttention` (used from the memory issue on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryAttentionConfig {
    pub d_model: usize,
    pub num_layers: usize,
    pub dim_feedforward: usize,
    pub kv_in_dim: usize,
}

/// `sam2.modeling.memory_encoder.MemoryEncoder` (used from the memory issue on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryEncoderConfig {
    pub in_dim: usize,
    pub out_dim: usize,
    pub num_pos_feats: usize,
    pub mask_downsampler_embed_dim: usize,
    pub fuser_dim: usize,
}

/// One Hiera block, as `Hiera.__init__` lays them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    pub dim: usize,
    pub dim_out: usize,
    pub num_heads: usize,
    /// 0 = global attention.
    pub window_size: usize,
    /// This block pools its queries (and shortcut) by `q_stride`.
    pub q_pool: bool,
}

impl Sam2Config {
    /// `configs/sam2.1/sam2.1_hiera_t.yaml` (SAM2.0's tiny config has the same shapes).
    pub fn tiny() -> Self {
        Self::with_trunk(HieraConfig {
            stages: vec![1, 2, 7, 2],
            global_att_blocks: vec![5, 7, 9],
            window_pos_embed_bkg_spatial_size: [7, 7],
            ..HieraConfig::hiera_defaults(96, 1)
        })
    }

    /// `configs/sam2.1/sam2.1_hiera_s.yaml`.
    pub fn small() -> Self {
        Self::with_trunk(HieraConfig {
            stages: vec![1, 2, 11, 2],
            global_att_blocks: vec![7, 10, 13],
            window_pos_embed_bkg_spatial_size: [7, 7],
            ..HieraConfig::hiera_defaults(96, 1)
        })
    }

    /// `configs/sam2.1/sam2.1_hiera_b+.yaml` (Hiera's defaults).
    pub fn base_plus() -> Self {
        Self::with_trunk(HieraConfig::hiera_defaults(112, 2))
    }

    /// `configs/sam2.1/sam2.1_hiera_l.yaml`.
    pub fn large() -> Self {
        Self::with_trunk(HieraConfig {
            stages: vec![2, 6, 36, 4],
            global_att_blocks: vec![23, 33, 43],
            window_pos_embed_bkg_spatial_size: [7, 7],
            window_spec: vec![8, 4, 16, 8],
            ..HieraConfig::hiera_defaults(144, 2)
        })
    }

    fn with_trunk(trunk: HieraConfig) -> Self {
        let backbone_channel_list = trunk.stage_dims().into_iter().rev().collect();
        Self {
            image_size: 1024,
            image_encoder: ImageEncoderConfig {
                scalp: 1,
                trunk,
                neck: FpnNeckConfig {
                    d_model: 256,
                    backbone_channel_list,
                    fpn_top_down_levels: vec![2, 3],
                    num_pos_feats: 256,
                    temperature: 10000.0,
                },
            },
            memory_attention: MemoryAttentionConfig { d_model: 256, num_layers: 4, dim_feedforward: 2048, kv_in_dim: 64 },
            memory_encoder: MemoryEncoderConfig {
                in_dim: 256,
                out_dim: 64,
                num_pos_feats: 64,
                mask_downsampler_embed_dim: 256,
                fuser_dim: 256,
            },
        }
    }

    /// A preset by name: tiny, small, base_plus (or b+), large.
    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "tiny" | "t" => Ok(Self::tiny()),
            "small" | "s" => Ok(Self::small()),
            "base_plus" | "b+" => Ok(Self::base_plus()),
            "large" | "l" => Ok(Self::large()),
            _ => Err(format!("unknown SAM2 model size '{name}': expected tiny, small, base_plus or large")),
        }
    }

    /// Applies one Hydra override as Meta's scripts write it, e.g.
    /// `++model.image_encoder.trunk.stages=[1,1,2,1]`. Keys this port has no field for are refused.
    pub fn apply_override(&mut self, spec: &str) -> Result<(), String> {
        let spec = spec.trim_start_matches('+');
        let (key, value) = spec.split_once('=').ok_or_else(|| format!("override '{spec}' has no '='"))?;
        let key = key.strip_prefix("model.").unwrap_or(key);
        let bad = |e: String| format!("override '{spec}': {e}");
        let mut json = serde_json::to_value(&*self).map_err(|e| bad(e.to_string()))?;
        let slot = override_slot(&mut json, key).ok_or_else(|| bad("no such setting in memseg's config".into()))?;
        *slot = parse_value(value).map_err(bad)?;
        *self = serde_json::from_value(json).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// Checks the relations Meta's code assumes (it asserts some and silently misbehaves on others).
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.image_encoder.trunk;
        let n = &self.image_encoder.neck;
        let fail = |m: String| Err(format!("invalid SAM2 config: {m}"));
        if t.stages.is_empty() || t.stages.contains(&0) {
            return fail(format!("trunk.stages {:?} must be non-empty with no empty stage", t.stages));
        }
        if t.stages.len() != t.window_spec.len() {
            return fail(format!("trunk.stages has {} stages but window_spec {}", t.stages.len(), t.window_spec.len()));
        }
        if t.q_pool > t.stages.len() - 1 {
            return fail(format!("trunk.q_pool {} exceeds the {} stage transitions", t.q_pool, t.stages.len() - 1));
        }
        // The patch embed divides by 4 and each q-pool by q_stride; the FPN's x2 upsampling needs exact halvings.
        let stride = 4 * t.q_stride[0].pow(t.q_pool as u32);
        if self.image_size == 0 || self.image_size % stride != 0 || t.q_stride[0] != t.q_stride[1] {
            return fail(format!("image_size {} must be a positive multiple of {stride}", self.image_size));
        }
        if (self.image_size / 4) % t.window_spec[0] != 0 {
            return fail(format!(
                "the stride-4 map ({}) must be a multiple of the window embedding ({})",
                self.image_size / 4,
                t.window_spec[0]
            ));
        }
        let dims: Vec<usize> = t.stage_dims().into_iter().rev().collect();
        if dims != n.backbone_channel_list {
            return fail(format!("neck.backbone_channel_list {:?} != trunk channels {:?}", n.backbone_channel_list, dims));
        }
        if n.d_model % 8 != 0 || n.num_pos_feats % 4 != 0 || t.embed_dim == 0 || t.num_heads == 0 {
            return fail("neck.d_model must divide by 8 and num_pos_feats by 4".into());
        }
        if self.image_encoder.scalp >= n.backbone_channel_list.len() {
            return fail("scalp drops every FPN level".into());
        }
        if let Some(b) = t.blocks().iter().find(|b| b.dim_out % b.num_heads != 0) {
            return fail(format!("block width {} does not divide into {} heads", b.dim_out, b.num_heads));
        }
        Ok(())
    }

    /// Side of the feature map at the image embedding's stride (16): 64 at 1024.
    pub fn embedding_side(&self) -> usize {
        self.image_size / 16
    }
}

impl HieraConfig {
    /// The defaults of `Hiera.__init__`, with the given width and heads.
    fn hiera_defaults(embed_dim: usize, num_heads: usize) -> Self {
        Self {
            embed_dim,
            num_heads,
            q_pool: 3,
            q_stride: [2, 2],
            stages: vec![2, 3, 16, 3],
            dim_mul: 2,
            head_mul: 2,
            window_pos_embed_bkg_spatial_size: [14, 14],
            window_spec: vec![8, 4, 14, 7],
            global_att_blocks: vec![12, 16, 20],
        }
    }

    /// Index of the last block of each stage.
    pub fn stage_ends(&self) -> Vec<usize> {
        self.stages.iter().scan(0, |sum, s| {
            *sum += s;
            Some(*sum - 1)
        }).collect()
    }

    /// Every block's shape, following `Hiera.__init__`: width and heads change at the first block of a new
    /// stage, which pools its queries and still uses the previous stage's window size.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let ends = self.stage_ends();
        let q_pool_blocks: Vec<usize> = ends[..ends.len() - 1].iter().map(|e| e + 1).take(self.q_pool).collect();
        let (mut dim, mut heads, mut stage) = (self.embed_dim, self.num_heads, 0);
        let mut specs = Vec::new();
        for i in 0..self.stages.iter().sum() {
            let mut window_size = self.window_spec[stage];
            if self.global_att_blocks.contains(&i) {
                window_size = 0;
            }
            let mut dim_out = dim;
            if i > 0 && ends.contains(&(i - 1)) {
                dim_out = dim * self.dim_mul;
                heads *= self.head_mul;
                stage += 1;
            }
            specs.push(BlockSpec { dim, dim_out, num_heads: heads, window_size, q_pool: q_pool_blocks.contains(&i) });
            dim = dim_out;
        }
        specs
    }

    /// Output width of each stage, highest resolution first.
    pub fn stage_dims(&self) -> Vec<usize> {
        let blocks = self.blocks();
        self.stage_ends().iter().map(|&e| blocks[e].dim_out).collect()
    }
}

/// Finds the JSON slot of a dotted Hydra key. Meta's keys are nested one level deeper in two places
/// (`neck.position_encoding.*`, `memory_encoder.{mask_downsampler,fuser.layer}.*`), which this config flattens.
fn override_slot<'a>(json: &'a mut serde_json::Value, key: &str) -> Option<&'a mut serde_json::Value> {
    let key = key
        .replace("neck.position_encoding.", "neck.")
        .replace("memory_encoder.position_encoding.", "memory_encoder.")
        .replace("memory_encoder.mask_downsampler.embed_dim", "memory_encoder.mask_downsampler_embed_dim")
        .replace("memory_encoder.fuser.layer.dim", "memory_encoder.fuser_dim")
        .replace("memory_attention.layer.", "memory_attention.");
    let mut slot = json;
    for part in key.split('.') {
        slot = slot.get_mut(part)?;
    }
    Some(slot)
}

fn parse_value(value: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(value).map_err(|e| format!("cannot read value '{value}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_blocks_match_meta_layout() {
        let t = Sam2Config::tiny().image_encoder.trunk;
        let b = t.blocks();
        assert_eq!(b.len(), 12);
        assert_eq!(t.stage_ends(), vec![0, 2, 9, 11]);
        let windows: Vec<usize> = b.iter().map(|b| b.window_size).collect();
        assert_eq!(windows, vec![8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]);
        let pooled: Vec<usize> = (0..12).filter(|&i| b[i].q_pool).collect();
        assert_eq!(pooled, vec![1, 3, 10]);
        assert_eq!((b[1].dim, b[1].dim_out, b[1].num_heads), (96, 192, 2));
        assert_eq!((b[11].dim_out, b[11].num_heads), (768, 8));
        assert_eq!(Sam2Config::tiny().image_encoder.neck.backbone_channel_list, vec![768, 384, 192, 96]);
        Sam2Config::tiny().validate().unwrap();
    }

    #[test]
    fn presets_validate_at_1024_and_512() {
        for name in ["tiny", "small", "b+", "large"] {
            let mut c = Sam2Config::preset(name).unwrap();
            c.validate().unwrap();
            c.apply_override("++model.image_size=512").unwrap();
            c.validate().unwrap();
        }
    }

    #[test]
    fn overrides_follow_hydra_keys_and_refuse_unknown_ones() {
        let mut c = Sam2Config::tiny();
        c.apply_override("++model.image_encoder.trunk.stages=[1,1,2,1]").unwrap();
        c.apply_override("++model.image_encoder.neck.position_encoding.num_pos_feats=32").unwrap();
        c.apply_override("++model.memory_encoder.fuser.layer.dim=32").unwrap();
        assert_eq!(c.image_encoder.trunk.stages, vec![1, 1, 2, 1]);
        assert_eq!(c.image_encoder.neck.num_pos_feats, 32);
        assert_eq!(c.memory_encoder.fuser_dim, 32);
        let err = c.apply_override("++model.image_encoder.trunk.warp_factor=9").unwrap_err();
        assert!(err.contains("no such setting"), "{err}");
        assert!(c.apply_override("++model.image_size=[1").is_err());
        assert!(c.apply_override("image_size").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = Sam2Config::tiny();
        c.image_size = 1000;
        assert!(c.validate().unwrap_err().contains("multiple of 32"));
        let mut c = Sam2Config::tiny();
        c.image_encoder.neck.backbone_channel_list = vec![1, 2, 3, 4];
        assert!(c.validate().unwrap_err().contains("backbone_channel_list"));
    }
}
