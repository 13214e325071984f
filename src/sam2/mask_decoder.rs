//! `sam2/modeling/sam/mask_decoder.py`: SAM's mask decoder as SAM2 configures it.
//!
//! Output tokens (object score, IoU, 4 masks) and the prompt tokens go through the two-way transformer with
//! the image embedding; the image side is upscaled x4 (adding the projected stride-8 and stride-4 features),
//! and each mask token's hypernetwork MLP turns it into the weights of one mask over the upscaled map.
//!
//! The flags every official SAM2 / SAM2.1 config sets (`_build_sam_heads`, `build_sam2*`) are fixed here:
//! `use_high_res_features`, `iou_prediction_use_sigmoid`, `pred_obj_scores` with `pred_obj_scores_mlp`,
//! `use_multimask_token_for_obj_ptr`, and `dynamic_multimask_via_stability` (delta 0.05, threshold 0.98, as
//! both `build_sam2` and `build_sam2_video_predictor` set it). `conv_s0` / `conv_s1` project the
//! high-resolution FPN levels in `SAM2Base.forward_image`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Gelu};
use burn::tensor::{Device, Tensor};

use super::sam2_utils::{Act, LayerNorm2d, Mlp};
use super::transformer::TwoWayTransformer;

/// Meta's `nn.Sequential` upscaling as a tuple, so the parameters keep Meta's indices (`output_upscaling.0`,
/// `.1`, `.3`): ConvT 2x2 s2 C -> C/4, LN2d, GELU, ConvT 2x2 s2 C/4 -> C/8, GELU.
pub type OutputUpscaling = (ConvTranspose2d, LayerNorm2d, Gelu, ConvTranspose2d, Gelu);

/// Candidate masks besides the single-mask output.
pub const NUM_MULTIMASK_OUTPUTS: usize = 3;
const DYNAMIC_MULTIMASK_STABILITY_DELTA: f32 = 0.05;
const DYNAMIC_MULTIMASK_STABILITY_THRESH: f32 = 0.98;

#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub transformer: TwoWayTransformer,
    pub iou_token: Embedding,
    /// One single-mask token, then the multimask tokens.
    pub mask_tokens: Embedding,
    pub obj_score_token: Embedding,
    pub output_upscaling: OutputUpscaling,
    /// d_model -> d_model/8 on the stride-4 level.
    pub conv_s0: Conv2d,
    /// d_model -> d_model/4 on the stride-8 level.
    pub conv_s1: Conv2d,
    /// Per mask token: 3-layer MLP C -> C -> C/8.
    pub output_hypernetworks_mlps: Vec<Mlp>,
    /// IoU token -> one score per mask token (3 layers, hidden 256, sigmoid).
    pub iou_prediction_head: Mlp,
    /// Object-score token -> one logit (3 layers).
    pub pred_obj_score_head: Mlp,
}

/// What `MaskDecoder.forward` returns.
#[derive(Clone, Debug)]
pub struct MaskDecoderOutput {
    /// Mask logits `[B, M, 4h, 4w]`: the 3 multimask candidates (M = 3) or one mask (M = 1).
    pub masks: Tensor<4>,
    /// Predicted IoU of each returned mask `[B, M]`.
    pub iou_pred: Tensor<2>,
    /// The tokens for object pointers `[B, T, C]`: the 3 multimask tokens with multimask output, else the
    /// single-mask token (T = 1), even when the stability fallback picked a multimask mask.
    pub sam_tokens_out: Tensor<3>,
    /// Object presence logit `[B, 1]`.
    pub object_score_logits: Tensor<2>,
}

impl MaskDecoder {
    /// SAM2's decoder over `transformer_dim` channels (`_build_sam_heads`: TwoWayTransformer depth 2, 8 heads,
    /// MLP 2048, IoU head depth 3 hidden 256).
    pub fn new(transformer_dim: usize, device: &Device) -> Self {
        let c = transformer_dim;
        let num_mask_tokens = NUM_MULTIMASK_OUTPUTS + 1;
        Self {
            transformer: TwoWayTransformer::new(2, c, 8, 2048, 2, device),
            iou_token: EmbeddingConfig::new(1, c).init(device),
            mask_tokens: EmbeddingConfig::new(num_mask_tokens, c).init(device),
            obj_score_token: EmbeddingConfig::new(1, c).init(device),
            output_upscaling: (
                ConvTranspose2dConfig::new([c, c / 4], [2, 2]).with_stride([2, 2]).init(device),
                LayerNorm2d::new(c / 4, device),
                Gelu::new(),
                ConvTranspose2dConfig::new([c / 4, c / 8], [2, 2]).with_stride([2, 2]).init(device),
                Gelu::new(),
            ),
            conv_s0: Conv2dConfig::new([c, c / 8], [1, 1]).init(device),
            conv_s1: Conv2dConfig::new([c, c / 4], [1, 1]).init(device),
            output_hypernetworks_mlps: (0..num_mask_tokens)
                .map(|_| Mlp::new(c, c, c / 8, 3, Act::Relu, device))
                .collect(),
            iou_prediction_head: Mlp::new(c, 256, num_mask_tokens, 3, Act::Relu, device).with_sigmoid_output(),
            pred_obj_score_head: Mlp::new(c, c, 1, 3, Act::Relu, device),
        }
    }

    /// `forward`: image embedding `[Bi, C, h, w]`, its positional encoding `[1, C, h, w]`
    /// (`PromptEncoder::get_dense_pe`), prompt embeddings `[B, N, C]` and `[B, C, h, w]`, the projected
    /// high-resolution features `[Bi, C/8, 4h, 4w]` and `[Bi, C/4, 2h, 2w]`. With `repeat_image` each image is
    /// repeated for the `B` prompts (`Bi = 1` in practice); without it `Bi = B`.
    ///
    /// Without `multimask_output` the single-mask output falls back to the best multimask candidate (by
    /// predicted IoU) when its stability score is below 0.98, per batch item, on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse_prompt_embeddings: Tensor<3>,
        dense_prompt_embeddings: Tensor<4>,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: [Tensor<4>; 2],
    ) -> MaskDecoderOutput {
        let (masks, iou_pred, mask_tokens_out, object_score_logits) = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image,
            high_res_features,
        );
        let m = masks.dims()[1];
        let (masks, iou_pred) = if multimask_output {
            (masks.narrow(1, 1, m - 1), iou_pred.narrow(1, 1, m - 1))
        } else {
            dynamic_multimask_via_stability(masks, iou_pred)
        };
        // Multimask output: the 3 multimask tokens (use_multimask_token_for_obj_ptr); otherwise always the
        // single-mask token, as Meta trains the object pointer on it.
        let sam_tokens_out = if multimask_output {
            mask_tokens_out.narrow(1, 1, NUM_MULTIMASK_OUTPUTS)
        } else {
            mask_tokens_out.narrow(1, 0, 1)
        };
        MaskDecoderOutput { masks, iou_pred, sam_tokens_out, object_score_logits }
    }

    /// `predict_masks`: all 4 masks `[B, 4, 4h, 4w]`, their IoU `[B, 4]`, the 4 mask tokens `[B, 4, C]` and the
    /// object score logit `[B, 1]`.
    pub fn predict_masks(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse_prompt_embeddings: Tensor<3>,
        dense_prompt_embeddings: Tensor<4>,
        repeat_image: bool,
        high_res_features: [Tensor<4>; 2],
    ) -> (Tensor<4>, Tensor<2>, Tensor<3>, Tensor<2>) {
        let [batch, _, c] = sparse_prompt_embeddings.dims();
        let num_mask_tokens = NUM_MULTIMASK_OUTPUTS + 1;
        // [obj score, iou, mask tokens] then the prompts.
        let output_tokens = Tensor::cat(
            vec![self.obj_score_token.weight.val(), self.iou_token.weight.val(), self.mask_tokens.weight.val()],
            0,
        );
        let n_out = output_tokens.dims()[0];
        let output_tokens = output_tokens.unsqueeze::<3>().expand([batch, n_out, c]);
        let tokens = Tensor::cat(vec![output_tokens, sparse_prompt_embeddings], 1);

        // repeat_interleave over the batch: each image once per prompt set.
        let repeat = |x: Tensor<4>| {
            let [bi, ch, h, w] = x.dims();
            x.unsqueeze_dim::<5>(1).repeat_dim(1, batch).reshape([bi * batch, ch, h, w])
        };
        let src = if repeat_image {
            repeat(image_embeddings)
        } else {
            assert_eq!(image_embeddings.dims()[0], batch, "one image embedding per prompt set");
            image_embeddings
        };
        let src = src + dense_prompt_embeddings;
        assert_eq!(image_pe.dims()[0], 1, "image_pe should have size 1 in batch dim (from get_dense_pe)");
        let pos_src = repeat(image_pe);
        let [b, c, h, w] = src.dims();

        let (hs, src) = self.transformer.forward(src, pos_src, tokens);
        let token = |i: usize, n: usize| hs.clone().narrow(1, i, n);
        let obj_score_token_out = token(0, 1).reshape([b, c]);
        let iou_token_out = token(1, 1).reshape([b, c]);
        let mask_tokens_out = token(2, num_mask_tokens);

        // Upscale, adding the stride-8 then the stride-4 features.
        let src = src.swap_dims(1, 2).reshape([b, c, h, w]);
        let (dc1, ln1, act1, dc2, act2) = &self.output_upscaling;
        let [feat_s0, feat_s1] = high_res_features;
        let upscaled = act1.forward(ln1.forward(dc1.forward(src) + feat_s1));
        let upscaled = act2.forward(dc2.forward(upscaled) + feat_s0);

        let hyper_in: Vec<Tensor<2>> = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(mask_tokens_out.clone().narrow(1, i, 1).reshape([b, c])))
            .collect();
        let hyper_in: Tensor<3> = Tensor::stack(hyper_in, 1);
        let [_, cu, hu, wu] = upscaled.dims();
        let masks = hyper_in.matmul(upscaled.reshape([b, cu, hu * wu])).reshape([b, num_mask_tokens, hu, wu]);

        let iou_pred = self.iou_prediction_head.forward(iou_token_out);
        let object_score_logits = self.pred_obj_score_head.forward(obj_score_token_out);
        (masks, iou_pred, mask_tokens_out, object_score_logits)
    }
}

/// `_get_stability_scores`: per mask `[B, M, H, W]` -> `[B, M]`, the IoU of the masks thresholded at +delta
/// and -delta (1 when both are empty).
pub fn stability_scores(mask_logits: Tensor<4>, delta: f32) -> Tensor<2> {
    let [b, m, h, w] = mask_logits.dims();
    let flat = mask_logits.reshape([b, m, h * w]);
    let area_i = flat.clone().greater_elem(delta).float().sum_dim(2).reshape([b, m]);
    let area_u = flat.greater_elem(-delta).float().sum_dim(2).reshape([b, m]);
    let empty = area_u.clone().equal_elem(0.0);
    (area_i / area_u).mask_fill(empty, 1.0)
}

/// `_dynamic_multimask_via_stability`: from all 4 masks `[B, 4, H, W]` and IoUs `[B, 4]`, the single-mask
/// output where it is stable (score >= 0.98), else the multimask candidate with the highest predicted IoU.
/// Returns `[B, 1, H, W]` and `[B, 1]`.
pub fn dynamic_multimask_via_stability(
    all_mask_logits: Tensor<4>,
    all_iou_scores: Tensor<2>,
) -> (Tensor<4>, Tensor<2>) {
    let [b, m, h, w] = all_mask_logits.dims();
    let multimask_logits = all_mask_logits.clone().narrow(1, 1, m - 1);
    let multimask_iou_scores = all_iou_scores.clone().narrow(1, 1, m - 1);
    let best = multimask_iou_scores.clone().argmax(1); // [B, 1]
    let best_multimask_logits = multimask_logits.gather(1, best.clone().reshape([b, 1, 1, 1]).expand([b, 1, h, w]));
    let best_multimask_iou_scores = multimask_iou_scores.gather(1, best);

    let singlemask_logits = all_mask_logits.narrow(1, 0, 1);
    let singlemask_iou_scores = all_iou_scores.narrow(1, 0, 1);
    let is_stable = stability_scores(singlemask_logits.clone(), DYNAMIC_MULTIMASK_STABILITY_DELTA)
        .greater_equal_elem(DYNAMIC_MULTIMASK_STABILITY_THRESH);
    let unstable = is_stable.bool_not();
    let mask_logits_out = singlemask_logits
        .mask_where(unstable.clone().reshape([b, 1, 1, 1]).expand([b, 1, h, w]), best_multimask_logits);
    let iou_scores_out = singlemask_iou_scores.mask_where(unstable, best_multimask_iou_scores);
    (mask_logits_out, iou_scores_out)
}

/// The candidate with the highest predicted IoU, chosen on the device (no read-back, so it runs in the
/// browser): `_forward_sam_heads`' multimask selection. From masks `[B, M, H, W]`, IoUs `[B, M]` and the
/// decoder's tokens `[B, T, C]` (T = M, or 1), returns the mask `[B, 1, H, W]` and the token `[B, 1, C]`
/// (the best one when `T > 1`, else the only one). Ties go to the backend's `argmax`, as in Meta's code.
pub fn select_best_mask(masks: Tensor<4>, iou_pred: Tensor<2>, sam_tokens_out: Tensor<3>) -> (Tensor<4>, Tensor<3>) {
    let [b, _, h, w] = masks.dims();
    let [_, t, c] = sam_tokens_out.dims();
    let best = iou_pred.argmax(1); // [B, 1]
    let mask = masks.gather(1, best.clone().reshape([b, 1, 1, 1]).expand([b, 1, h, w]));
    let token =
        if t > 1 { sam_tokens_out.gather(1, best.reshape([b, 1, 1]).expand([b, 1, c])) } else { sam_tokens_out };
    (mask, token)
}
