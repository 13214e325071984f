//! `sam2/modeling/sam/transformer.py`: the attention layers of SAM2 (plain and rotary) and the mask
//! decoder's two-way transformer.
//!
//! Batch-first `[B, N, C]` throughout, as Meta's attention classes take it.

use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use super::position_encoding::{apply_rotary_enc, compute_axial_cis};
use super::sam2_utils::{Act, Mlp};

/// Most attention scores (`B x heads x Nq x Nk` f32 values) materialised at once: 64 MiB. WebGPU's default
/// storage-buffer binding limit is 128 MiB, and the memory attention at 1024 px (4096 queries against up to
/// 7 x 4096 memory keys) would need 470 MB per head; longer query sets are processed in slices of rows.
const MAX_SCORES: usize = 1 << 24;

/// `F.scaled_dot_product_attention` (scale `1/sqrt(head_dim)`, no mask) on `[B, heads, N, head_dim]`.
pub fn scaled_dot_product_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    if q.device() == Device::flex() {
        flex_attention(q, k, v)
    } else {
        attention_in_row_slices(q, k, v)
    }
}

/// On GPUs, in slices of queries when the score matrix would exceed [`MAX_SCORES`]. Each query row's
/// softmax only involves that row, so slicing changes nothing.
fn attention_in_row_slices(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [b, h, nq, _] = q.dims();
    let nk = k.dims()[2];
    let rows = (MAX_SCORES / (b * h * nk).max(1)).max(1);
    if rows >= nq {
        return attention(q, k, v, None, None, AttentionModuleOptions::default());
    }
    // Equal slices: a small remainder slice would take Flex's naive kernel, which sums the softmax less
    // accurately (seen as 8e-5 x std at 1024 px with a 6-row tail).
    let rows = nq.div_ceil(nq.div_ceil(rows));
    let slices = (0..nq)
        .step_by(rows)
        .map(|start| {
            let q = q.clone().narrow(2, start, rows.min(nq - start));
            attention(q, k.clone(), v.clone(), None, None, AttentionModuleOptions::default())
        })
        .collect();
    Tensor::cat(slices, 2)
}

/// On Flex, whose long-sequence kernel is tiled (no score matrix to bound) and gives each `(batch, head)`
/// pair to one thread. SAM2's memory attention has one head, so it would run on one core: its queries are
/// split into groups that become extra "heads" sharing the one key/value head (Flex's grouped-query path),
/// one or more per thread. Each query row is computed exactly as before.
fn flex_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [b, h, nq, d] = q.dims();
    let threads = crate::backend::cpu_threads();
    let groups = (2 * threads).div_ceil(b * h);
    // With fewer pairs than threads, `groups` is at least 3.
    if b * h >= threads || !nq.is_multiple_of(groups) {
        return attention(q, k, v, None, None, AttentionModuleOptions::default());
    }
    let q = q.reshape([b, h * groups, nq / groups, d]);
    let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
    let dv = out.dims()[3];
    out.reshape([b, h, nq, dv])
}

/// `Attention`: multi-head attention whose projections may shrink the width (`downsample_rate`) and whose
/// keys and values may come in with another width (`kv_in_dim`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
}

impl Attention {
    pub fn new(
        embedding_dim: usize,
        num_heads: usize,
        downsample_rate: usize,
        kv_in_dim: Option<usize>,
        device: &Device,
    ) -> Self {
        let internal_dim = embedding_dim / downsample_rate;
        assert!(internal_dim.is_multiple_of(num_heads), "num_heads must divide embedding_dim / downsample_rate");
        let kv_in_dim = kv_in_dim.unwrap_or(embedding_dim);
        Self {
            q_proj: LinearConfig::new(embedding_dim, internal_dim).init(device),
            k_proj: LinearConfig::new(kv_in_dim, internal_dim).init(device),
            v_proj: LinearConfig::new(kv_in_dim, internal_dim).init(device),
            out_proj: LinearConfig::new(internal_dim, embedding_dim).init(device),
            num_heads,
        }
    }

    /// The three projections, split into heads `[B, heads, N, head_dim]`.
    fn project(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> [Tensor<4>; 3] {
        let heads = self.num_heads;
        let separate = |x: Tensor<3>| {
            let [b, n, c] = x.dims();
            x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
        };
        [separate(self.q_proj.forward(q)), separate(self.k_proj.forward(k)), separate(self.v_proj.forward(v))]
    }

    /// Scaled dot-product attention (scale `1/sqrt(head_dim)`), heads recombined, output projection.
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
        let out = scaled_dot_product_attention(q, k, v);
        let [b, h, n, d] = out.dims();
        self.out_proj.forward(out.swap_dims(1, 2).reshape([b, n, h * d]))
    }

    /// `q [B, Nq, C]`, `k`, `v [B, Nk, kv_in_dim]` -> `[B, Nq, C]`.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let [q, k, v] = self.project(q, k, v);
        self.attend(q, k, v)
    }
}

/// The cos/sin tables of the last token count seen (Meta keeps `freqs_cis` and recomputes it when the
/// size changes).
#[derive(Debug, Clone)]
struct RopeTables {
    tokens: usize,
    device: Device,
    cos: Tensor<2>,
    sin: Tensor<2>,
}

/// `RoPEAttention`: [`Attention`] with 2-D axial rotary encoding of the queries and of the first
/// `Nk - num_k_exclude_rope` keys. The queries are a square `sqrt(Nq) x sqrt(Nq)` grid; with
/// `rope_k_repeat` the rotated keys are several such grids (memory frames), each rotated like the queries.
#[derive(Module, Debug)]
pub struct RoPEAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    rope_theta: f32,
    #[module(skip)]
    rope_k_repeat: bool,
    #[module(skip)]
    tables: Arc<Mutex<Option<RopeTables>>>,
}

impl RoPEAttention {
    pub fn new(
        embedding_dim: usize,
        num_heads: usize,
        downsample_rate: usize,
        kv_in_dim: Option<usize>,
        rope_theta: f32,
        rope_k_repeat: bool,
        device: &Device,
    ) -> Self {
        let Attention { q_proj, k_proj, v_proj, out_proj, num_heads } =
            Attention::new(embedding_dim, num_heads, downsample_rate, kv_in_dim, device);
        Self { q_proj, k_proj, v_proj, out_proj, num_heads, rope_theta, rope_k_repeat, tables: Default::default() }
    }

    /// The (cached) tables for `tokens` query positions on `device`.
    fn tables(&self, tokens: usize, head_dim: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let mut cache = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.as_ref().filter(|t| t.tokens == tokens && &t.device == device) {
            return (t.cos.clone(), t.sin.clone());
        }
        let side = (tokens as f64).sqrt().round() as usize;
        assert_eq!(side * side, tokens, "RoPEAttention needs a square grid of queries, got {tokens} tokens");
        let (cos, sin) = compute_axial_cis(head_dim, side, side, self.rope_theta, device);
        *cache = Some(RopeTables { tokens, device: device.clone(), cos: cos.clone(), sin: sin.clone() });
        (cos, sin)
    }

    /// `q [B, Nq, C]`, `k`, `v [B, Nk, kv_in_dim]` -> `[B, Nq, C]`; the last `num_k_exclude_rope` keys (object
    /// pointers) are not rotated.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, num_k_exclude_rope: usize) -> Tensor<3> {
        let heads = self.num_heads;
        let separate = |x: Tensor<3>| {
            let [b, n, c] = x.dims();
            x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
        };
        let (q, k, v) =
            (separate(self.q_proj.forward(q)), separate(self.k_proj.forward(k)), separate(self.v_proj.forward(v)));
        let [_, _, nq, head_dim] = q.dims();
        let nk = k.dims()[2];
        assert!(nq == nk || self.rope_k_repeat, "keys ({nk}) and queries ({nq}) differ without rope_k_repeat");
        let (cos, sin) = self.tables(nq, head_dim, &q.device());
        let num_k_rope = nk - num_k_exclude_rope;
        let (q, k) = if num_k_exclude_rope == 0 {
            apply_rotary_enc(q, k, &cos, &sin, self.rope_k_repeat)
        } else {
            let rest = k.clone().narrow(2, num_k_rope, num_k_exclude_rope);
            let (q, rotated) = apply_rotary_enc(q, k.narrow(2, 0, num_k_rope), &cos, &sin, self.rope_k_repeat);
            (q, Tensor::cat(vec![rotated, rest], 2))
        };
        let out = scaled_dot_product_attention(q, k, v);
        let [b, h, n, d] = out.dims();
        self.out_proj.forward(out.swap_dims(1, 2).reshape([b, n, h * d]))
    }
}

/// `TwoWayAttentionBlock`: token self-attention, tokens -> image cross-attention, token MLP, image -> tokens
/// cross-attention; post-norm (LayerNorm eps 1e-5) after each.
#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock {
    pub self_attn: Attention,
    pub norm1: LayerNorm,
    pub cross_attn_token_to_image: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub norm3: LayerNorm,
    pub norm4: LayerNorm,
    pub cross_attn_image_to_token: Attention,
    #[module(skip)]
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    pub fn new(
        embedding_dim: usize,
        num_heads: usize,
        mlp_dim: usize,
        attention_downsample_rate: usize,
        skip_first_layer_pe: bool,
        device: &Device,
    ) -> Self {
        let norm = || LayerNormConfig::new(embedding_dim).init(device);
        let cross = || Attention::new(embedding_dim, num_heads, attention_downsample_rate, None, device);
        Self {
            self_attn: Attention::new(embedding_dim, num_heads, 1, None, device),
            norm1: norm(),
            cross_attn_token_to_image: cross(),
            norm2: norm(),
            mlp: Mlp::new(embedding_dim, mlp_dim, embedding_dim, 2, Act::Relu, device),
            norm3: norm(),
            norm4: norm(),
            cross_attn_image_to_token: cross(),
            skip_first_layer_pe,
        }
    }

    /// `(queries [B, Nt, C], keys [B, HW, C])` -> the updated pair.
    pub fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: &Tensor<3>,
        key_pe: &Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        // The first layer's tokens are the prompt embeddings themselves: no PE added, no residual.
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = self.norm2.forward(queries + self.cross_attn_token_to_image.forward(q, k, keys.clone()));

        let queries = self.norm3.forward(queries.clone() + self.mlp.forward(queries));

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let keys = self.norm4.forward(keys + self.cross_attn_image_to_token.forward(k, q, queries.clone()));
        (queries, keys)
    }
}

/// `TwoWayTransformer`: `depth` two-way blocks, then a final tokens -> image attention and LayerNorm.
#[derive(Module, Debug)]
pub struct TwoWayTransformer {
    pub layers: Vec<TwoWayAttentionBlock>,
    pub final_attn_token_to_image: Attention,
    pub norm_final_attn: LayerNorm,
}

impl TwoWayTransformer {
    pub fn new(
        depth: usize,
        embedding_dim: usize,
        num_heads: usize,
        mlp_dim: usize,
        attention_downsample_rate: usize,
        device: &Device,
    ) -> Self {
        Self {
            layers: (0..depth)
                .map(|i| {
                    TwoWayAttentionBlock::new(
                        embedding_dim,
                        num_heads,
                        mlp_dim,
                        attention_downsample_rate,
                        i == 0,
                        device,
                    )
                })
                .collect(),
            final_attn_token_to_image: Attention::new(
                embedding_dim,
                num_heads,
                attention_downsample_rate,
                None,
                device,
            ),
            norm_final_attn: LayerNormConfig::new(embedding_dim).init(device),
        }
    }

    /// `image_embedding`, `image_pe` `[B, C, H, W]`, `point_embedding` `[B, Nt, C]` ->
    /// `(tokens [B, Nt, C], image [B, HW, C])`.
    pub fn forward(
        &self,
        image_embedding: Tensor<4>,
        image_pe: Tensor<4>,
        point_embedding: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let flat = |x: Tensor<4>| {
            let [b, c, h, w] = x.dims();
            x.reshape([b, c, h * w]).swap_dims(1, 2)
        };
        let (image_embedding, image_pe) = (flat(image_embedding), flat(image_pe));
        let mut queries = point_embedding.clone();
        let mut keys = image_embedding;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, &point_embedding, &image_pe);
        }
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + image_pe;
        let queries =
            self.norm_final_attn.forward(queries + self.final_attn_token_to_image.forward(q, k, keys.clone()));
        (queries, keys)
    }
}
