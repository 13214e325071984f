//! `sam2/modeling/sam/prompt_encoder.py`: clicks, boxes and mask prompts -> the mask decoder's sparse and
//! dense prompt embeddings.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Gelu};
use burn::tensor::{Device, Tensor};

use super::position_encoding::PositionEmbeddingRandom;
use super::sam2_utils::LayerNorm2d;

/// Point labels of SAM: negative and positive clicks, the two box corners; -1 marks padding.
pub const LABEL_PAD: f32 = -1.0;
pub const LABEL_NEGATIVE: f32 = 0.0;
pub const LABEL_POSITIVE: f32 = 1.0;
pub const LABEL_BOX_TOP_LEFT: f32 = 2.0;
pub const LABEL_BOX_BOTTOM_RIGHT: f32 = 3.0;

/// Meta's `nn.Sequential` of the mask path, as a tuple so the parameters keep Meta's indices
/// (`mask_downscaling.0`, `.1`, `.3`, `.4`, `.6`): conv 2x2 s2 -> LN2d -> GELU -> conv 2x2 s2 -> LN2d -> GELU
/// -> conv 1x1.
pub type MaskDownscaling = (Conv2d, LayerNorm2d, Gelu, Conv2d, LayerNorm2d, Gelu, Conv2d);

#[derive(Module, Debug)]
pub struct PromptEncoder {
    pub pe_layer: PositionEmbeddingRandom,
    /// Added to the point encodings by label: 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.
    pub point_embeddings: Vec<Embedding>,
    /// Replaces the encoding of padding points (label -1).
    pub not_a_point_embed: Embedding,
    pub mask_downscaling: MaskDownscaling,
    /// The dense embedding when there is no mask prompt.
    pub no_mask_embed: Embedding,
    #[module(skip)]
    embed_dim: usize,
    /// `[h, w]` of the image embedding (image size / 16).
    #[module(skip)]
    image_embedding_size: [usize; 2],
    /// `[h, w]` of the model input, in the pixel units of the point coordinates.
    #[module(skip)]
    input_image_size: [usize; 2],
}

impl PromptEncoder {
    /// `mask_in_chans` is 16 in SAM2 (`_build_sam_heads`).
    pub fn new(
        embed_dim: usize,
        image_embedding_size: [usize; 2],
        input_image_size: [usize; 2],
        mask_in_chans: usize,
        device: &Device,
    ) -> Self {
        let embedding = || EmbeddingConfig::new(1, embed_dim).init(device);
        let c4 = mask_in_chans / 4;
        Self {
            pe_layer: PositionEmbeddingRandom::new(embed_dim / 2, device),
            point_embeddings: (0..4).map(|_| embedding()).collect(),
            not_a_point_embed: embedding(),
            mask_downscaling: (
                Conv2dConfig::new([1, c4], [2, 2]).with_stride([2, 2]).init(device),
                LayerNorm2d::new(c4, device),
                Gelu::new(),
                Conv2dConfig::new([c4, mask_in_chans], [2, 2]).with_stride([2, 2]).init(device),
                LayerNorm2d::new(mask_in_chans, device),
                Gelu::new(),
                Conv2dConfig::new([mask_in_chans, embed_dim], [1, 1]).init(device),
            ),
            no_mask_embed: embedding(),
            embed_dim,
            image_embedding_size,
            input_image_size,
        }
    }

    /// The size of a mask prompt: 4x the image embedding (`mask_input_size`).
    pub fn mask_input_size(&self) -> [usize; 2] {
        [4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1]]
    }

    /// `get_dense_pe`: the encoding of every image-embedding position, `[1, C, h, w]`.
    pub fn get_dense_pe(&self) -> Tensor<4> {
        let [h, w] = self.image_embedding_size;
        self.pe_layer.forward(h, w).unsqueeze()
    }

    /// `[1, C]` row of a one-row embedding, as `[1, 1, C]` for broadcasting over `[B, N, C]`.
    fn row(e: &Embedding) -> Tensor<3> {
        e.weight.val().unsqueeze()
    }

    /// `_embed_points`: coordinates `[B, P, 2]` (pixels, x then y), labels `[B, P]` -> `[B, P (+1), C]`.
    /// `pad` appends a padding point (label -1), as Meta does when there is no box.
    fn embed_points(&self, points: Tensor<3>, labels: Tensor<2>, pad: bool) -> Tensor<3> {
        let points = points.add_scalar(0.5); // pixel centres
        let (points, labels) = if pad {
            let [b, _, _] = points.dims();
            let device = points.device();
            (
                Tensor::cat(vec![points, Tensor::zeros([b, 1, 2], &device)], 1),
                Tensor::cat(vec![labels, Tensor::full([b, 1], LABEL_PAD, &device)], 1),
            )
        } else {
            (points, labels)
        };
        let mut embedding = self.pe_layer.forward_with_coords(points, self.input_image_size);
        let [b, p, c] = embedding.dims();
        let is = |label: f32| labels.clone().equal_elem(label).unsqueeze_dim::<3>(2).expand([b, p, c]);
        embedding = embedding.mask_where(is(LABEL_PAD), Self::row(&self.not_a_point_embed).expand([b, p, c]));
        for (i, point_embedding) in self.point_embeddings.iter().enumerate() {
            let added = embedding.clone() + Self::row(point_embedding);
            embedding = embedding.mask_where(is(i as f32), added);
        }
        embedding
    }

    /// `_embed_boxes`: `[B, 4]` (x0, y0, x1, y1 in pixels) -> the two corners `[B, 2, C]`.
    fn embed_boxes(&self, boxes: Tensor<2>) -> Tensor<3> {
        let [b, _] = boxes.dims();
        let corners = boxes.add_scalar(0.5).reshape([b, 2, 2]);
        let embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size);
        let corner_embeddings =
            Tensor::cat(vec![Self::row(&self.point_embeddings[2]), Self::row(&self.point_embeddings[3])], 1);
        embedding + corner_embeddings
    }

    /// `_embed_masks`: `[B, 1, 4h, 4w]` mask logits -> `[B, C, h, w]`.
    fn embed_masks(&self, masks: Tensor<4>) -> Tensor<4> {
        let (conv1, ln1, act1, conv2, ln2, act2, conv3) = &self.mask_downscaling;
        let x = act1.forward(ln1.forward(conv1.forward(masks)));
        let x = act2.forward(ln2.forward(conv2.forward(x)));
        conv3.forward(x)
    }

    /// `forward`: `(sparse [B, N, C], dense [B, C, h, w])`. `points` are (coordinates `[B, P, 2]`, labels
    /// `[B, P]`); a padding point is appended to them when there is no box.
    ///
    /// SAM2 always passes points (a lone padding point when there are no clicks, `_forward_sam_heads`), so
    /// the sparse embedding is never empty; Meta's `[B, 0, C]` for neither points nor boxes is not supported
    /// (zero-sized tensors are not portable across backends) and panics.
    pub fn forward(
        &self,
        points: Option<(Tensor<3>, Tensor<2>)>,
        boxes: Option<Tensor<2>>,
        masks: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let bs = match (&points, &boxes) {
            (Some((coords, _)), _) => coords.dims()[0],
            (None, Some(b)) => b.dims()[0],
            (None, None) => panic!("PromptEncoder::forward needs points or a box (SAM2 passes a padding point)"),
        };
        let mut sparse = Vec::new();
        if let Some((coords, labels)) = points {
            sparse.push(self.embed_points(coords, labels, boxes.is_none()));
        }
        if let Some(boxes) = boxes {
            sparse.push(self.embed_boxes(boxes));
        }
        let sparse = Tensor::cat(sparse, 1);
        let dense = match masks {
            Some(masks) => self.embed_masks(masks),
            None => {
                let [h, w] = self.image_embedding_size;
                self.no_mask_embed.weight.val().reshape([1, self.embed_dim, 1, 1]).expand([bs, self.embed_dim, h, w])
            }
        };
        (sparse, dense)
    }
}
