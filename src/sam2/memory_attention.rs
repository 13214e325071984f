//! `sam2/modeling/memory_attention.py`: the current frame's features attend to themselves and to the memory
//! bank (past masks' memories and object pointers), in `num_layers` pre-norm transformer layers.
//!
//! Dropout (0.1 in the configs) is an identity at inference, so it has no counterpart here.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, activation};

use super::config::{MemoryAttentionConfig, MemoryAttentionLayerConfig, RoPEAttentionConfig};
use super::transformer::RoPEAttention;

fn rope_attention(config: &RoPEAttentionConfig, device: &Device) -> RoPEAttention {
    RoPEAttention::new(
        config.embedding_dim,
        config.num_heads,
        config.downsample_rate,
        config.kv_in_dim,
        config.rope_theta,
        config.rope_k_repeat,
        device,
    )
}

/// `MemoryAttentionLayer`: pre-norm self-attention (RoPE), cross-attention to the memories (RoPE on the
/// queries and on the spatial memory tokens, not on the trailing object-pointer tokens), and a ReLU MLP.
#[derive(Module, Debug)]
pub struct MemoryAttentionLayer {
    pub self_attn: RoPEAttention,
    pub cross_attn_image: RoPEAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub norm3: LayerNorm,
    #[module(skip)]
    pos_enc_at_attn: bool,
    #[module(skip)]
    pos_enc_at_cross_attn_queries: bool,
    #[module(skip)]
    pos_enc_at_cross_attn_keys: bool,
}

impl MemoryAttentionLayer {
    pub fn new(config: &MemoryAttentionLayerConfig, device: &Device) -> Self {
        let d = config.d_model;
        // nn.LayerNorm's default eps (1e-5), which is also Burn's.
        let norm = || LayerNormConfig::new(d).init(device);
        Self {
            self_attn: rope_attention(&config.self_attention, device),
            cross_attn_image: rope_attention(&config.cross_attention, device),
            linear1: LinearConfig::new(d, config.dim_feedforward).init(device),
            linear2: LinearConfig::new(config.dim_feedforward, d).init(device),
            norm1: norm(),
            norm2: norm(),
            norm3: norm(),
            pos_enc_at_attn: config.pos_enc_at_attn,
            pos_enc_at_cross_attn_queries: config.pos_enc_at_cross_attn_queries,
            pos_enc_at_cross_attn_keys: config.pos_enc_at_cross_attn_keys,
        }
    }

    /// Batch-first: `tgt [B, N, C]`, `memory`/`pos [B, M, kv_in_dim]`, `query_pos [B, N, C]` -> `[B, N, C]`.
    /// The last `num_k_exclude_rope` memory tokens are object pointers (not rotated).
    pub fn forward(
        &self,
        tgt: Tensor<3>,
        memory: Tensor<3>,
        pos: Tensor<3>,
        query_pos: Tensor<3>,
        num_k_exclude_rope: usize,
    ) -> Tensor<3> {
        // Self-attention.
        let tgt2 = self.norm1.forward(tgt.clone());
        let q = if self.pos_enc_at_attn { tgt2.clone() + query_pos.clone() } else { tgt2.clone() };
        let tgt = tgt + self.self_attn.forward(q.clone(), q, tgt2, 0);

        // Cross-attention to the memories.
        let tgt2 = self.norm2.forward(tgt.clone());
        let q = if self.pos_enc_at_cross_attn_queries { tgt2 + query_pos } else { tgt2 };
        let k = if self.pos_enc_at_cross_attn_keys { memory.clone() + pos } else { memory.clone() };
        let tgt = tgt + self.cross_attn_image.forward(q, k, memory, num_k_exclude_rope);

        // MLP.
        let tgt2 = self.norm3.forward(tgt.clone());
        tgt + self.linear2.forward(activation::relu(self.linear1.forward(tgt2)))
    }
}

/// `MemoryAttention`: the layers, then a final LayerNorm.
#[derive(Module, Debug)]
pub struct MemoryAttention {
    pub layers: Vec<MemoryAttentionLayer>,
    pub norm: LayerNorm,
    #[module(skip)]
    pos_enc_at_input: bool,
}

impl MemoryAttention {
    pub fn new(config: &MemoryAttentionConfig, device: &Device) -> Self {
        Self {
            layers: (0..config.num_layers).map(|_| MemoryAttentionLayer::new(&config.layer, device)).collect(),
            norm: LayerNormConfig::new(config.d_model).init(device),
            pos_enc_at_input: config.pos_enc_at_input,
        }
    }

    /// Sequence-first, as `SAM2Base` calls it: `curr`/`curr_pos` `[HW, B, C]` (the frame's flattened image
    /// embedding and its sine encoding), `memory`/`memory_pos` `[M, B, kv_in_dim]` (spatial memories, then
    /// `num_obj_ptr_tokens` object-pointer tokens) -> `[HW, B, C]`.
    pub fn forward(
        &self,
        curr: Tensor<3>,
        curr_pos: Tensor<3>,
        memory: Tensor<3>,
        memory_pos: Tensor<3>,
        num_obj_ptr_tokens: usize,
    ) -> Tensor<3> {
        assert_eq!(curr.dims()[1], memory.dims()[1], "Batch size must be the same for curr and memory");
        let output = if self.pos_enc_at_input { curr + curr_pos.clone().mul_scalar(0.1) } else { curr };
        // The layers are batch-first.
        let mut output = output.swap_dims(0, 1);
        let (curr_pos, memory, memory_pos) =
            (curr_pos.swap_dims(0, 1), memory.swap_dims(0, 1), memory_pos.swap_dims(0, 1));
        for layer in &self.layers {
            output = layer.forward(output, memory.clone(), memory_pos.clone(), curr_pos.clone(), num_obj_ptr_tokens);
        }
        self.norm.forward(output).swap_dims(0, 1)
    }
}
