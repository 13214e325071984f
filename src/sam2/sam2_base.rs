//! `sam2/modeling/sam2_base.py`: the model root and one tracking step. Field names are Meta's, so checkpoint
//! keys map one to one.
//!
//! A tracking step (`track_step`) on one frame and one object:
//! 1. a frame with a user mask uses the mask itself as output (`use_mask_as_output`); any other frame is
//!    conditioned on the memory bank by memory attention (`prepare_memory_conditioned_features`) and
//!    segmented by the SAM heads (`forward_sam_heads`), with the user's clicks if it has any;
//! 2. the predicted mask and the frame's features become the frame's memory (`encode_new_memory`).
//!
//! Batch size is 1 throughout (one object per call), as Meta's video predictor runs it.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};

use super::config::{Sam2Config, TrackingConfig};
use super::image_encoder::ImageEncoder;
use super::interpolate;
use super::mask_decoder::MaskDecoder;
use super::memory_attention::MemoryAttention;
use super::memory_encoder::MemoryEncoder;
use super::prompt_encoder::PromptEncoder;
use super::memory_bank::{MemoryBank, MemoryEntry, MemorySelection, round_to_bf16};
use super::sam2_utils::{Act, Mlp};

/// Mask logits of "no object" (`NO_OBJ_SCORE`).
pub const NO_OBJ_SCORE: f32 = -1024.0;

#[derive(Module, Debug)]
pub struct Sam2Base {
    pub image_encoder: ImageEncoder,
    pub sam_prompt_encoder: PromptEncoder,
    pub sam_mask_decoder: MaskDecoder,
    pub memory_attention: MemoryAttention,
    pub memory_encoder: MemoryEncoder,
    /// Temporal encodings of the memories `[num_maskmem, 1, 1, mem_dim]`, the neighbouring frame first.
    pub maskmem_tpos_enc: Param<Tensor<4>>,
    /// Added to the features of a frame with no memory (the first conditioning frames) `[1, 1, C]`.
    pub no_mem_embed: Param<Tensor<3>>,
    pub no_mem_pos_enc: Param<Tensor<3>>,
    /// The object pointer of a frame where the object is absent `[1, C]`.
    pub no_obj_ptr: Param<Tensor<2>>,
    /// SAM2.1: added to the memory of a frame where the object is absent `[1, mem_dim]`.
    pub no_obj_embed_spatial: Option<Param<Tensor<2>>>,
    /// SAM output token -> object pointer (3-layer MLP).
    pub obj_ptr_proj: Mlp,
    /// SAM2.1: the pointers' temporal sine encoding (hidden_dim) -> mem_dim.
    pub obj_ptr_tpos_proj: Option<Linear>,
    /// A user mask at the model size -> a mask prompt at the low-resolution size (4x4 stride 4).
    pub mask_downsample: Conv2d,
    #[module(skip)]
    config: TrackingConfig,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    hidden_dim: usize,
    #[module(skip)]
    mem_dim: usize,
}

/// What `SAM2Base.forward_image` returns, prepared for tracking.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    /// `backbone_fpn`, highest resolution first, with `conv_s0`/`conv_s1` applied to levels 0 and 1.
    pub backbone_fpn: Vec<Tensor<4>>,
}

impl ImageFeatures {
    /// Features handed over as plain numbers (the page's encoder helpers): each level's `(shape, values)`
    /// must be what `model` computes for one image ([`Sam2Base::feature_shapes`]).
    pub fn from_levels(model: &Sam2Base, levels: Vec<(Vec<usize>, Vec<f32>)>) -> Result<Self, String> {
        let expected = model.feature_shapes();
        if levels.len() != expected.len() {
            return Err(format!("{} feature levels where the model has {}", levels.len(), expected.len()));
        }
        let device = model.device();
        let mut backbone_fpn = Vec::new();
        for (i, ((shape, values), want)) in levels.into_iter().zip(expected).enumerate() {
            if shape != want || values.len() != want.iter().product::<usize>() {
                return Err(format!("feature level {i}: shape {shape:?} with {} values where the model has {want:?}", values.len()));
            }
            backbone_fpn.push(Tensor::<4>::from_data(TensorData::new(values, want), &device));
        }
        Ok(Self { backbone_fpn })
    }

    /// The stride-16 image embedding (`vision_features`).
    pub fn image_embed(&self) -> &Tensor<4> {
        self.backbone_fpn.last().expect("at least one level")
    }

    /// The two high-resolution levels for the mask decoder.
    pub fn high_res_features(&self) -> [Tensor<4>; 2] {
        [self.backbone_fpn[0].clone(), self.backbone_fpn[1].clone()]
    }
}

/// User clicks on a frame, in model-input pixels (`point_inputs`): coordinates `[1, P, 2]` (x, y) and labels
/// `[1, P]` (1 positive, 0 negative, 2/3 box corners, -1 padding).
#[derive(Clone, Debug)]
pub struct PointInputs {
    pub coords: Tensor<3>,
    pub labels: Tensor<2>,
}

impl PointInputs {
    pub fn len(&self) -> usize {
        self.labels.dims()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The outputs of the SAM heads (or of a mask used as output) for one frame.
#[derive(Clone, Debug)]
pub struct SamOutput {
    /// The chosen low-resolution logits `[1, 1, S/4, S/4]`.
    pub low_res_masks: Tensor<4>,
    /// The same at the model size `[1, 1, S, S]`.
    pub high_res_masks: Tensor<4>,
    pub obj_ptr: Tensor<2>,
    pub object_score_logits: Tensor<2>,
    /// The decoder's predicted IoU of the chosen mask `[1, 1]` (1 for a mask given by the user, as Meta sets it).
    pub iou_score: Tensor<2>,
    /// With multimask output (a first single click): the candidates the chosen mask was picked from.
    pub candidates: Option<Candidates>,
}

/// SAM's candidate masks for an ambiguous prompt: low-resolution logits `[1, M, S/4, S/4]` and their predicted
/// IoUs `[1, M]`; the chosen mask is the one with the highest IoU (Meta's `_forward_sam_heads`).
#[derive(Clone, Debug)]
pub struct Candidates {
    pub masks: Tensor<4>,
    pub ious: Tensor<2>,
}

/// One frame's result (`current_out` of `track_step`).
#[derive(Clone, Debug)]
pub struct TrackOutput {
    pub sam: SamOutput,
    /// The memory-conditioned image embedding, when the frame went through memory attention.
    pub pix_feat_with_mem: Option<Tensor<4>>,
    /// The frame's memory (bf16-rounded features), when the memory encoder ran.
    pub maskmem_features: Option<Tensor<4>>,
}

impl TrackOutput {
    /// The bank entry of this output; `None` if the memory encoder did not run.
    pub fn memory_entry(&self) -> Option<MemoryEntry> {
        Some(MemoryEntry {
            maskmem_features: self.maskmem_features.clone()?,
            obj_ptr: self.sam.obj_ptr.clone(),
            object_score_logits: self.sam.object_score_logits.clone(),
            pred_masks: self.sam.low_res_masks.clone(),
            iou_score: self.sam.iou_score.clone(),
        })
    }
}

impl Sam2Base {
    pub fn new(config: &Sam2Config, device: &Device) -> Self {
        let hidden_dim = config.image_encoder.neck.d_model;
        let mem_dim = config.memory_encoder.out_dim;
        let t = &config.tracking;
        let zeros3 = || Param::from_tensor(Tensor::zeros([1, 1, hidden_dim], device));
        Self {
            image_encoder: ImageEncoder::new(&config.image_encoder, device),
            // SAM's prompt encoder over the stride-16 grid, mask_in_chans 16 (`_build_sam_heads`).
            sam_prompt_encoder: PromptEncoder::new(
                hidden_dim,
                [config.image_size / 16; 2],
                [config.image_size; 2],
                16,
                device,
            ),
            sam_mask_decoder: MaskDecoder::new(hidden_dim, device),
            memory_attention: MemoryAttention::new(&config.memory_attention, device),
            memory_encoder: MemoryEncoder::new(&config.memory_encoder, device),
            maskmem_tpos_enc: Param::from_tensor(Tensor::zeros([t.num_maskmem, 1, 1, mem_dim], device)),
            no_mem_embed: zeros3(),
            no_mem_pos_enc: zeros3(),
            no_obj_ptr: Param::from_tensor(Tensor::zeros([1, hidden_dim], device)),
            no_obj_embed_spatial: t
                .no_obj_embed_spatial
                .then(|| Param::from_tensor(Tensor::zeros([1, mem_dim], device))),
            obj_ptr_proj: Mlp::new(hidden_dim, hidden_dim, hidden_dim, 3, Act::Relu, device),
            obj_ptr_tpos_proj: t
                .proj_tpos_enc_in_obj_ptrs
                .then(|| LinearConfig::new(hidden_dim, mem_dim).init(device)),
            mask_downsample: Conv2dConfig::new([1, 1], [4, 4]).with_stride([4, 4]).init(device),
            config: t.clone(),
            image_size: config.image_size,
            hidden_dim,
            mem_dim,
        }
    }

    pub fn tracking_config(&self) -> &TrackingConfig {
        &self.config
    }

    /// Side of the square model input.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    pub fn device(&self) -> Device {
        self.no_obj_ptr.val().device()
    }

    /// The shapes of [`ImageFeatures::backbone_fpn`] for one image: strides 4, 8 and 16, with `conv_s0` and
    /// `conv_s1` narrowing levels 0 and 1 to an eighth and a quarter of the channels (Meta's `MaskDecoder`).
    pub fn feature_shapes(&self) -> [[usize; 4]; 3] {
        let (s, c) = (self.image_size, self.hidden_dim);
        [[1, c / 8, s / 4, s / 4], [1, c / 4, s / 8, s / 8], [1, c, s / 16, s / 16]]
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

    /// `track_step` for one object. `mask_inputs` is a 0/1 mask at the model size `[1, 1, S, S]`.
    #[allow(clippy::too_many_arguments)]
    pub fn track_step(
        &self,
        frame: usize,
        is_init_cond_frame: bool,
        features: &ImageFeatures,
        point_inputs: Option<&PointInputs>,
        mask_inputs: Option<Tensor<4>>,
        bank: &MemoryBank,
        num_frames: usize,
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Option<Tensor<4>>,
    ) -> TrackOutput {
        let (sam, pix_feat_with_mem) = match mask_inputs {
            Some(mask) => (self.use_mask_as_output(features, mask), None),
            None => {
                let pix_feat = self.prepare_memory_conditioned_features(frame, is_init_cond_frame, features, bank, num_frames, reverse);
                let multimask = self.use_multimask(is_init_cond_frame, point_inputs);
                let sam = self.forward_sam_heads(&pix_feat, features, point_inputs, prev_sam_mask_logits, multimask);
                (sam, Some(pix_feat))
            }
        };
        let maskmem_features = run_mem_encoder.then(|| {
            self.encode_new_memory(features, sam.high_res_masks.clone(), &sam.object_score_logits, point_inputs.is_some())
        });
        TrackOutput { sam, pix_feat_with_mem, maskmem_features }
    }

    /// [`track_step`](Self::track_step) for clicks (no mask input, no memory encoding) on features already
    /// conditioned on the memory bank (`pix_feat`, from [`prepare_memory_conditioned_features`](
    /// Self::prepare_memory_conditioned_features)): the frame's later clicks reuse its memory attention, which
    /// the same bank gives again.
    pub fn prompt_step(
        &self,
        pix_feat: Tensor<4>,
        is_init_cond_frame: bool,
        features: &ImageFeatures,
        point_inputs: &PointInputs,
        prev_sam_mask_logits: Option<Tensor<4>>,
    ) -> TrackOutput {
        let multimask = self.use_multimask(is_init_cond_frame, Some(point_inputs));
        let sam = self.forward_sam_heads(&pix_feat, features, Some(point_inputs), prev_sam_mask_logits, multimask);
        TrackOutput { sam, pix_feat_with_mem: Some(pix_feat), maskmem_features: None }
    }

    /// `_use_multimask`: three candidate masks on initial frames and while tracking, for 0 or 1 click.
    fn use_multimask(&self, is_init_cond_frame: bool, point_inputs: Option<&PointInputs>) -> bool {
        let clicks = point_inputs.map_or(0, PointInputs::len);
        (is_init_cond_frame || self.config.multimask_output_for_tracking)
            && (self.config.multimask_min_pt_num..=self.config.multimask_max_pt_num).contains(&clicks)
    }

    /// `_forward_sam_heads`: prompt encoder and mask decoder on `pix_feat`, choice among the candidate
    /// masks by predicted IoU, and the object pointer (replaced by `no_obj_ptr` when the object is absent).
    fn forward_sam_heads(
        &self,
        pix_feat: &Tensor<4>,
        features: &ImageFeatures,
        point_inputs: Option<&PointInputs>,
        mask_inputs: Option<Tensor<4>>,
        multimask_output: bool,
    ) -> SamOutput {
        let device = pix_feat.device();
        // No clicks: a single padding point (label -1).
        let (coords, labels) = match point_inputs {
            Some(p) => (p.coords.clone(), p.labels.clone()),
            None => (Tensor::zeros([1, 1, 2], &device), Tensor::full([1, 1], -1.0, &device)),
        };
        let mask_prompt = mask_inputs.map(|m| {
            let size = self.sam_prompt_encoder.mask_input_size();
            interpolate::bilinear(m, size, true)
        });
        let (sparse, dense) = self.sam_prompt_encoder.forward(Some((coords, labels)), None, mask_prompt);
        let decoded = self.sam_mask_decoder.forward(
            pix_feat.clone(),
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
            false,
            features.high_res_features(),
        );
        let (multimasks, ious, sam_tokens, object_score_logits) =
            (decoded.masks, decoded.iou_pred, decoded.sam_tokens_out, decoded.object_score_logits);
        // A frame where the object is absent gets NO_OBJ_SCORE everywhere (a hard choice, as for memory).
        let present = object_score_logits.clone().greater_elem(0.0);
        let [_, m, h, w] = multimasks.dims();
        let absent = present.clone().bool_not().reshape([1, 1, 1, 1]).expand([1, m, h, w]);
        let multimasks = multimasks.mask_fill(absent, NO_OBJ_SCORE);

        let (low_res_masks, token, iou_score, candidates) = if multimask_output {
            // Chosen on the device (no read-back, which the browser could only do asynchronously).
            let best = ious.clone().argmax(1).reshape([1]);
            let token = if sam_tokens.dims()[1] > 1 { sam_tokens.select(1, best.clone()) } else { sam_tokens.narrow(1, 0, 1) };
            let candidates = Candidates { masks: multimasks.clone(), ious: ious.clone() };
            (multimasks.select(1, best.clone()), token, ious.select(1, best), Some(candidates))
        } else {
            (multimasks, sam_tokens.narrow(1, 0, 1), ious.narrow(1, 0, 1), None)
        };
        let high_res_masks = interpolate::bilinear(low_res_masks.clone(), [self.image_size; 2], false);
        let obj_ptr = self.obj_ptr_proj.forward(token.squeeze_dim::<2>(1));
        let lambda = present.float();
        let obj_ptr = self.mix_no_obj_ptr(obj_ptr, lambda);
        SamOutput { low_res_masks, high_res_masks, obj_ptr, object_score_logits, iou_score, candidates }
    }

    /// `fixed_no_obj_ptr`: `lambda * ptr + (1 - lambda) * no_obj_ptr`, `lambda` 1 when the object is present.
    fn mix_no_obj_ptr(&self, obj_ptr: Tensor<2>, lambda: Tensor<2>) -> Tensor<2> {
        let absent = lambda.clone().neg().add_scalar(1.0);
        obj_ptr * lambda + absent * self.no_obj_ptr.val()
    }

    /// `_use_mask_as_output`: the user's mask becomes the output (logits -10/+10); its pointer comes from
    /// the SAM heads prompted with the downsampled mask on the raw (memory-free) features.
    fn use_mask_as_output(&self, features: &ImageFeatures, mask: Tensor<4>) -> SamOutput {
        let high_res_masks = mask.clone().mul_scalar(20.0).add_scalar(-10.0);
        let [_, _, h, w] = high_res_masks.dims();
        let low_res_masks = interpolate::bilinear(high_res_masks.clone(), [h / 4, w / 4], true);
        let prompt = self.mask_downsample.forward(mask.clone());
        let heads = self.forward_sam_heads(features.image_embed(), features, None, Some(prompt), false);
        // Presence is decided by the mask, not by the decoder's object score.
        let present = mask.greater_elem(0.0).any().float().reshape([1, 1]);
        let object_score_logits = present.clone().mul_scalar(20.0).add_scalar(-10.0);
        let obj_ptr = self.mix_no_obj_ptr(heads.obj_ptr, present);
        let iou_score = Tensor::ones([1, 1], &obj_ptr.device());
        SamOutput { low_res_masks, high_res_masks, obj_ptr, object_score_logits, iou_score, candidates: None }
    }

    /// `_prepare_memory_conditioned_features`: the frame's image embedding attended to the memory bank.
    /// Initial conditioning frames have no memory: the `no_mem_embed` is added instead.
    pub fn prepare_memory_conditioned_features(
        &self,
        frame: usize,
        is_init_cond_frame: bool,
        features: &ImageFeatures,
        bank: &MemoryBank,
        num_frames: usize,
        reverse: bool,
    ) -> Tensor<4> {
        let embed = features.image_embed().clone();
        let embed_device = embed.device();
        let [_, c, h, w] = embed.dims();
        if is_init_cond_frame {
            return embed + self.no_mem_embed.val().reshape([1, c, 1, 1]);
        }
        let selection = bank.select(frame, reverse, num_frames, &self.config);
        let (memory, memory_pos, num_obj_ptr_tokens) = self.assemble_memory(&selection, bank, reverse);
        let curr = seq_first(embed);
        let curr_pos = seq_first(self.image_encoder.neck.position_encoding(h, w, &embed_device));
        let out = self.memory_attention.forward(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens);
        // [HW, 1, C] -> [1, C, H, W]
        out.permute([1, 2, 0]).reshape([1, c, h, w])
    }

    /// The memory tokens `[M, 1, mem_dim]`, their position encodings, and how many of them (at the end) are
    /// object-pointer tokens.
    fn assemble_memory(&self, sel: &MemorySelection, bank: &MemoryBank, reverse: bool) -> (Tensor<3>, Tensor<3>, usize) {
        let _ = reverse; // the direction is already in the selection's signed distances
        let mut memory = Vec::new();
        let mut pos = Vec::new();
        let maskmem_pos = self.maskmem_pos_enc_tokens(bank);
        for slot in &sel.spatial {
            let entry = bank.get(slot.frame).expect("selected frames are in the bank");
            memory.push(seq_first(entry.maskmem_features.clone()));
            let tpos = self.maskmem_tpos_enc.val().narrow(0, self.config.num_maskmem - slot.t_pos - 1, 1).reshape([1, 1, self.mem_dim]);
            pos.push(maskmem_pos.clone() + tpos);
        }
        let mut num_ptr_tokens = 0;
        if !sel.pointers.is_empty() {
            let (ptrs, ptr_pos) = self.pointer_tokens(sel, bank);
            num_ptr_tokens = ptrs.dims()[0];
            memory.push(ptrs);
            pos.push(ptr_pos);
        }
        (Tensor::cat(memory, 0), Tensor::cat(pos, 0), num_ptr_tokens)
    }

    /// The memory encoder's spatial position encoding `[HW, 1, mem_dim]` (the same for every frame).
    fn maskmem_pos_enc_tokens(&self, bank: &MemoryBank) -> Tensor<3> {
        let any = bank.entries().first().map(|e| e.frame).and_then(|f| bank.get(f)).expect("a non-empty bank");
        let [_, _, h, w] = any.maskmem_features.dims();
        let pos = self.memory_encoder.position_encoding(h, w, &any.maskmem_features.device());
        seq_first(pos)
    }

    /// Object pointers as memory tokens: each `hidden_dim` pointer split into `hidden_dim / mem_dim` tokens,
    /// with SAM2.1's projected temporal sine encoding (zeros in SAM2.0).
    fn pointer_tokens(&self, sel: &MemorySelection, bank: &MemoryBank) -> (Tensor<3>, Tensor<3>) {
        let ptrs: Vec<Tensor<2>> = sel.pointers.iter().map(|p| bank.get(p.frame).expect("in bank").obj_ptr.clone()).collect();
        let n = ptrs.len();
        let ptrs = Tensor::cat(ptrs, 0); // [n, C]
        let device = ptrs.device();
        let pos = if self.config.add_tpos_enc_to_obj_ptrs {
            let scale = sel.pointer_distance_scale.max(1) as f32;
            let dim = if self.config.proj_tpos_enc_in_obj_ptrs { self.hidden_dim } else { self.mem_dim };
            let rel: Vec<f32> = sel.pointers.iter().map(|p| p.distance as f32 / scale).collect();
            let pe = sine_pe_1d(&rel, dim, &device);
            match &self.obj_ptr_tpos_proj {
                Some(proj) => proj.forward(pe),
                None => pe,
            }
        } else {
            Tensor::zeros([n, self.mem_dim], &device)
        };
        let split = self.hidden_dim / self.mem_dim;
        // [n, C] -> [n * split, 1, mem_dim], token j of pointer i at i * split + j (as Meta's permute/flatten).
        let ptrs = ptrs.reshape([n * split, 1, self.mem_dim]);
        let pos = pos.reshape([n, 1, 1, self.mem_dim]).expand([n, split, 1, self.mem_dim]).reshape([n * split, 1, self.mem_dim]);
        (ptrs, pos)
    }

    /// `_encode_new_memory`: the frame's raw image embedding fused with its predicted mask.
    /// Masks from clicks are binarized; others go through a scaled sigmoid. Returns bf16-rounded features.
    fn encode_new_memory(
        &self,
        features: &ImageFeatures,
        high_res_masks: Tensor<4>,
        object_score_logits: &Tensor<2>,
        is_mask_from_pts: bool,
    ) -> Tensor<4> {
        let cfg = &self.config;
        let mask = if is_mask_from_pts && cfg.binarize_mask_from_pts_for_mem_enc {
            high_res_masks.greater_elem(0.0).float()
        } else {
            burn::tensor::activation::sigmoid(high_res_masks)
        };
        let mask = mask.mul_scalar(cfg.sigmoid_scale_for_mem_enc).add_scalar(cfg.sigmoid_bias_for_mem_enc);
        let (mut maskmem, _pos) = self.memory_encoder.forward(features.image_embed().clone(), mask, true);
        if let Some(no_obj) = &self.no_obj_embed_spatial {
            let absent = object_score_logits.clone().lower_equal_elem(0.0).float().reshape([1, 1, 1, 1]);
            maskmem = maskmem + absent * no_obj.val().reshape([1, self.mem_dim, 1, 1]);
        }
        round_to_bf16(maskmem)
    }

    /// Encodes the memory of a conditioning frame from its stored low-resolution logits, as
    /// `propagate_in_video_preflight` does for frames given by the user (upsampled, treated as clicks).
    pub fn encode_conditioning_memory(&self, features: &ImageFeatures, out: &SamOutput) -> Tensor<4> {
        let high_res = interpolate::bilinear(out.low_res_masks.clone(), [self.image_size; 2], false);
        self.encode_new_memory(features, high_res, &out.object_score_logits, true)
    }
}

/// `[1, C, H, W]` -> `[HW, 1, C]` (Meta's sequence-first layout for attention).
fn seq_first(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h * w]).permute([2, 0, 1])
}

/// `get_1d_sine_pe`: `[sin(p / t_i) for i] ++ [cos(p / t_i) for i]`, `t_i = 10000^(2 (i/2) / (dim/2))`.
fn sine_pe_1d(positions: &[f32], dim: usize, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let mut data = Vec::with_capacity(positions.len() * dim);
    for &p in positions {
        let t = |i: usize| 10000f32.powf((2 * (i / 2)) as f32 / half as f32);
        data.extend((0..half).map(|i| (p / t(i)).sin()));
        data.extend((0..half).map(|i| (p / t(i)).cos()));
    }
    Tensor::from_data(TensorData::new(data, [positions.len(), dim]), device)
}
