//! SAM2 configuration as data, mirroring the Hydra YAML files in Meta's `sam2/configs/`.
//!
//! Field names follow the YAML keys (`model.image_encoder.trunk.embed_dim` is
//! `image_encoder.trunk.embed_dim` here), so Meta's overrides apply with [`Sam2Config::apply_override`].
//! Everything the model builds is derived from these numbers; nothing is tied to 1024x1024.

use serde::{Deserialize, Serialize};

use super::weights::Generation;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sam2Config {
    /// Side of the square model input (`model.image_size`); a multiple of 32.
    pub image_size: usize,
    pub image_encoder: ImageEncoderConfig,
    pub memory_attention: MemoryAttentionConfig,
    pub memory_encoder: MemoryEncoderConfig,
    /// `SAM2Base`'s own settings (YAML keys directly under `model:`).
    #[serde(flatten)]
    pub tracking: TrackingConfig,
}

/// The settings of `SAM2Base` itself that official configs or the video predictor set, or that differ
/// between SAM2.0 and SAM2.1. Every other `SAM2Base` flag is fixed at the value all official tiny/small/
/// base+/large configs share (high-res features in SAM, object scores with MLP, fixed no-object pointer,
/// MLP pointer projection, mask input used as output, no-memory embedding added directly, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackingConfig {
    /// Memory frames a tracked frame attends to: the conditioning frames plus the last `num_maskmem - 1`.
    pub num_maskmem: usize,
    /// Object pointers (past frames) in the memory attention, at most.
    pub max_obj_ptrs_in_encoder: usize,
    /// Conditioning frames in the memory attention, the temporally closest first (-1: all).
    pub max_cond_frames_in_attn: i64,
    /// Take the non-conditioning memories every `r` frames (1: the last ones).
    pub memory_temporal_stride_for_eval: usize,
    /// Mask logits -> memory encoder input: `sigmoid(x) * scale + bias`.
    pub sigmoid_scale_for_mem_enc: f32,
    pub sigmoid_bias_for_mem_enc: f32,
    /// Masks from clicks are binarized before the memory encoder (set by `build_sam2_video_predictor`).
    pub binarize_mask_from_pts_for_mem_enc: bool,
    /// Multimask output while tracking, and the click counts that use multimask output.
    pub multimask_output_for_tracking: bool,
    pub multimask_min_pt_num: usize,
    pub multimask_max_pt_num: usize,
    /// SAM2.1: a learned embedding added to the memory of frames where the object is absent.
    pub no_obj_embed_spatial: bool,
    /// SAM2.1: temporal encoding of object pointers, projected, signed by the direction of travel.
    pub add_tpos_enc_to_obj_ptrs: bool,
    pub proj_tpos_enc_in_obj_ptrs: bool,
    pub use_signed_tpos_enc_to_obj_ptrs: bool,
}

impl TrackingConfig {
    /// `configs/sam2.1/*.yaml` with `build_sam2_video_predictor`'s additions.
    pub fn sam2_1() -> Self {
        Self {
            num_maskmem: 7,
            max_obj_ptrs_in_encoder: 16,
            max_cond_frames_in_attn: -1,
            memory_temporal_stride_for_eval: 1,
            sigmoid_scale_for_mem_enc: 20.0,
            sigmoid_bias_for_mem_enc: -10.0,
            binarize_mask_from_pts_for_mem_enc: true,
            multimask_output_for_tracking: true,
            multimask_min_pt_num: 0,
            multimask_max_pt_num: 1,
            no_obj_embed_spatial: true,
            add_tpos_enc_to_obj_ptrs: true,
            proj_tpos_enc_in_obj_ptrs: true,
            use_signed_tpos_enc_to_obj_ptrs: true,
        }
    }

    /// `configs/sam2/*.yaml`: no no-object embedding, no temporal encoding of object pointers.
    pub fn sam2_0() -> Self {
        Self {
            no_obj_embed_spatial: false,
            add_tpos_enc_to_obj_ptrs: false,
            proj_tpos_enc_in_obj_ptrs: false,
            use_signed_tpos_enc_to_obj_ptrs: false,
            ..Self::sam2_1()
        }
    }
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

/// `sam2.modeling.memory_attention.MemoryAttention`, nested as its YAML (`memory_attention.layer.
/// cross_attention.kv_in_dim` is `memory_attention.layer.cross_attention.kv_in_dim` here). Fixed at the value
/// every official config has: `batch_first` true, `activation` relu; dropout is off at inference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryAttentionConfig {
    pub d_model: usize,
    /// Adds `0.1 x curr_pos` to the frame's features before the first layer.
    pub pos_enc_at_input: bool,
    pub num_layers: usize,
    pub layer: MemoryAttentionLayerConfig,
}

/// `sam2.modeling.memory_attention.MemoryAttentionLayer`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryAttentionLayerConfig {
    pub d_model: usize,
    pub dim_feedforward: usize,
    /// Where the position encodings are added: self-attention queries/keys, cross-attention keys
    /// (the memories' encodings), cross-attention queries (the frame's encoding).
    pub pos_enc_at_attn: bool,
    pub pos_enc_at_cross_attn_keys: bool,
    pub pos_enc_at_cross_attn_queries: bool,
    pub self_attention: RoPEAttentionConfig,
    pub cross_attention: RoPEAttentionConfig,
}

/// `sam2.modeling.sam.transformer.RoPEAttention`'s constructor arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoPEAttentionConfig {
    pub embedding_dim: usize,
    pub num_heads: usize,
    pub downsample_rate: usize,
    pub rope_theta: f32,
    /// The grid Meta precomputes its rotary tables for; they are recomputed for the actual token count
    /// (here always), so this only has to be accepted.
    pub feat_sizes: [usize; 2],
    /// Keys are several query-sized grids (memory frames), each rotated like the queries.
    pub rope_k_repeat: bool,
    /// Width of the keys and values (None: `embedding_dim`).
    pub kv_in_dim: Option<usize>,
}

/// `sam2.modeling.memory_encoder.MemoryEncoder`, nested as its YAML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryEncoderConfig {
    /// Width of the pixel features (the image embedding) and of the fused map.
    pub in_dim: usize,
    /// Width of the memories (`mem_dim`).
    pub out_dim: usize,
    pub position_encoding: SineEncodingConfig,
    pub mask_downsampler: MaskDownSamplerConfig,
    pub fuser: FuserConfig,
}

/// `PositionEmbeddingSine` with `normalize: true`, `scale: null` (2π), as every official config has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SineEncodingConfig {
    pub num_pos_feats: usize,
    pub temperature: f32,
}

/// `sam2.modeling.memory_encoder.MaskDownSampler`: `log_stride(total_stride)` convolutions, each widening
/// the channels by `stride²`, then a 1x1 projection to `embed_dim`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskDownSamplerConfig {
    pub embed_dim: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
    pub total_stride: usize,
}

/// `sam2.modeling.memory_encoder.Fuser` (no input projection in any official config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FuserConfig {
    pub num_layers: usize,
    pub layer: CXBlockConfig,
}

/// `sam2.modeling.memory_encoder.CXBlock`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CXBlockConfig {
    pub dim: usize,
    pub kernel_size: usize,
    pub padding: usize,
    /// The layer scale `gamma` exists when this is positive (its value is only an init).
    pub layer_scale_init_value: f64,
    /// Depthwise (groups = dim) or dense 7x7 convolution.
    pub use_dwconv: bool,
}

impl MemoryAttentionConfig {
    /// `configs/sam2.1/sam2.1_hiera_t.yaml` (the same in every official SAM2 / SAM2.1 config).
    pub fn sam2() -> Self {
        let rope = |rope_k_repeat, kv_in_dim| RoPEAttentionConfig {
            embedding_dim: 256,
            num_heads: 1,
            downsample_rate: 1,
            rope_theta: 10000.0,
            feat_sizes: [64, 64],
            rope_k_repeat,
            kv_in_dim,
        };
        Self {
            d_model: 256,
            pos_enc_at_input: true,
            num_layers: 4,
            layer: MemoryAttentionLayerConfig {
                d_model: 256,
                dim_feedforward: 2048,
                pos_enc_at_attn: false,
                pos_enc_at_cross_attn_keys: true,
                pos_enc_at_cross_attn_queries: false,
                self_attention: rope(false, None),
                cross_attention: rope(true, Some(64)),
            },
        }
    }
}

impl MemoryEncoderConfig {
    /// `configs/sam2.1/sam2.1_hiera_t.yaml` (the same in every official SAM2 / SAM2.1 config), with
    /// `MaskDownSampler`'s default `embed_dim` 256 and `total_stride` 16.
    pub fn sam2() -> Self {
        Self {
            in_dim: 256,
            out_dim: 64,
            position_encoding: SineEncodingConfig { num_pos_feats: 64, temperature: 10000.0 },
            mask_downsampler: MaskDownSamplerConfig {
                embed_dim: 256,
                kernel_size: 3,
                stride: 2,
                padding: 1,
                total_stride: 16,
            },
            fuser: FuserConfig {
                num_layers: 2,
                layer: CXBlockConfig {
                    dim: 256,
                    kernel_size: 7,
                    padding: 3,
                    layer_scale_init_value: 1e-6,
                    use_dwconv: true,
                },
            },
        }
    }
}

impl MaskDownSamplerConfig {
    /// Meta's `int(math.log2(total_stride) // math.log2(stride))` (it asserts `stride^n == total_stride`).
    pub fn num_layers(&self) -> usize {
        ((self.total_stride as f64).log2().div_euclid((self.stride as f64).log2())) as usize
    }
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
            memory_attention: MemoryAttentionConfig::sam2(),
            memory_encoder: MemoryEncoderConfig::sam2(),
            tracking: TrackingConfig::sam2_1(),
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
        self.validate_memory().or_else(fail)
    }

    /// The memory modules' widths must chain: image embedding -> memory encoder -> memories -> memory
    /// attention's keys; Meta's code would fail on a shape mismatch deep inside a forward pass.
    fn validate_memory(&self) -> Result<(), String> {
        let d = self.image_encoder.neck.d_model;
        let (ma, me) = (&self.memory_attention, &self.memory_encoder);
        let (sa, ca) = (&ma.layer.self_attention, &ma.layer.cross_attention);
        let widths = [ma.d_model, ma.layer.d_model, sa.embedding_dim, ca.embedding_dim, me.in_dim,
            me.mask_downsampler.embed_dim, me.fuser.layer.dim];
        if widths.iter().any(|&w| w != d) {
            return Err(format!(
                "memory_attention.d_model, layer.d_model, its attentions' embedding_dim, memory_encoder.in_dim, \
                 mask_downsampler.embed_dim and fuser.layer.dim ({widths:?}) must all be neck.d_model {d}"
            ));
        }
        if ca.kv_in_dim.unwrap_or(ca.embedding_dim) != me.out_dim || me.position_encoding.num_pos_feats != me.out_dim {
            return Err(format!(
                "memory_attention.layer.cross_attention.kv_in_dim ({:?}) and memory_encoder.position_encoding.\
                 num_pos_feats ({}) must be memory_encoder.out_dim ({})",
                ca.kv_in_dim, me.position_encoding.num_pos_feats, me.out_dim
            ));
        }
        if me.out_dim % 4 != 0 {
            return Err(format!("memory_encoder.out_dim {} must divide by 4 (sine encoding)", me.out_dim));
        }
        for (name, a) in [("self_attention", sa), ("cross_attention", ca)] {
            let inner = a.embedding_dim / a.downsample_rate.max(1);
            let bad = a.downsample_rate == 0 || a.num_heads == 0 || inner % a.num_heads != 0;
            if bad || (inner / a.num_heads) % 4 != 0 {
                return Err(format!("memory_attention.layer.{name}: the head width must divide by 4 (axial RoPE)"));
            }
        }
        let m = &me.mask_downsampler;
        if m.stride < 2 || m.stride.pow(m.num_layers() as u32) != m.total_stride || m.total_stride != 16 {
            return Err(format!(
                "mask_downsampler: stride {} must reach total_stride {} (the image embedding's stride, 16) exactly",
                m.stride, m.total_stride
            ));
        }
        let cx = &me.fuser.layer;
        if cx.kernel_size != 2 * cx.padding + 1 {
            let k = cx.kernel_size;
            return Err(format!("fuser.layer: kernel_size {k} must be 2 x padding + 1 (size-preserving)"));
        }
        Ok(())
    }

    /// Sets what differs between SAM2.0 and SAM2.1 checkpoints (their keys tell which one a file is).
    pub fn set_generation(&mut self, generation: Generation) {
        let base = match generation {
            Generation::Sam2_0 => TrackingConfig::sam2_0(),
            Generation::Sam2_1 => TrackingConfig::sam2_1(),
        };
        let t = &mut self.tracking;
        t.no_obj_embed_spatial = base.no_obj_embed_spatial;
        t.add_tpos_enc_to_obj_ptrs = base.add_tpos_enc_to_obj_ptrs;
        t.proj_tpos_enc_in_obj_ptrs = base.proj_tpos_enc_in_obj_ptrs;
        t.use_signed_tpos_enc_to_obj_ptrs = base.use_signed_tpos_enc_to_obj_ptrs;
    }

    /// Side of the feature map at the image embedding's stride (16): 64 at 1024.
    pub fn embedding_side(&self) -> usize {
        self.image_size / 16
    }

    /// Reads a config written as `serde_json::to_string(&config)` (how compact weights files carry theirs).
    /// A setting the JSON lacks keeps its [`Sam2Config::tiny`] value, so files written before a setting
    /// existed still load (a new setting gets the value official configs share); an unknown one is refused,
    /// since this memseg could not honour it. Not validated: call [`Sam2Config::validate`].
    pub fn from_json(json: &str) -> Result<Self, String> {
        let patch: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("config is not JSON: {e}"))?;
        let mut value = serde_json::to_value(Self::tiny()).map_err(|e| e.to_string())?;
        overlay(&mut value, &patch, "")?;
        serde_json::from_value(value).map_err(|e| format!("config: {e}"))
    }
}

/// Writes `patch` over `base`, object by object; a key `base` lacks is an error naming its dotted path.
fn overlay(base: &mut serde_json::Value, patch: &serde_json::Value, path: &str) -> Result<(), String> {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                let at = format!("{path}{key}");
                let slot = base.get_mut(key).ok_or_else(|| format!("config: unknown setting '{at}'"))?;
                overlay(slot, value, &format!("{at}."))?;
            }
        }
        (slot, value) => *slot = value.clone(),
    }
    Ok(())
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

/// Finds the JSON slot of a dotted Hydra key. Meta's keys are nested one level deeper in one place
/// (`neck.position_encoding.*`), which this config flattens; the memory modules keep Meta's nesting.
fn override_slot<'a>(json: &'a mut serde_json::Value, key: &str) -> Option<&'a mut serde_json::Value> {
    let key = key.replace("neck.position_encoding.", "neck.");
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
        assert_eq!(c.memory_encoder.fuser.layer.dim, 32);
        let err = c.apply_override("++model.image_encoder.trunk.warp_factor=9").unwrap_err();
        assert!(err.contains("no such setting"), "{err}");
        assert!(c.apply_override("++model.image_size=[1").is_err());
        assert!(c.apply_override("image_size").is_err());
    }

    #[test]
    fn json_round_trips_keeps_missing_settings_and_refuses_unknown_ones() {
        let mut c = Sam2Config::small();
        c.apply_override("++model.image_size=512").unwrap();
        c.set_generation(Generation::Sam2_0);
        assert_eq!(Sam2Config::from_json(&serde_json::to_string(&c).unwrap()).unwrap(), c);
        let old = Sam2Config::from_json(r#"{"image_size": 256, "image_encoder": {"trunk": {"embed_dim": 24}}}"#).unwrap();
        assert_eq!((old.image_size, old.image_encoder.trunk.embed_dim, old.tracking.num_maskmem), (256, 24, 7));
        let err = Sam2Config::from_json(r#"{"image_encoder": {"trunk": {"warp_factor": 9}}}"#).unwrap_err();
        assert!(err.contains("image_encoder.trunk.warp_factor"), "{err}");
        assert!(Sam2Config::from_json(r#"{"image_size": "big"}"#).is_err());
        assert!(Sam2Config::from_json("{").is_err());
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
