//! Prompt-free SAM2 adaptation (issue 7; Mitsuoka & Hotta, ICIP 2026, "Prompt-Free and Efficient SAM2
//! Adaptation ... via Dual Adapters"): the LW-Adapter with structural re-parameterization, the PEG, and the
//! prompt-free multi-class head on the frozen mask decoder. The design and its reasons: `docs/adapters.md`.
//!
//! - [`LwAdapter`] (RepAdapter-style): `x + s * up(down(x))`, `down` dense d -> r, `up` dense r -> d, zero-init
//!   `up` (so a fresh adapter is the identity). It sits in front of `attn.qkv` and `mlp.layers.0` of every Hiera
//!   block, so it folds exactly into that linear layer ([`fold_encoder`]): the folded encoder *is* the plain
//!   encoder with new weights.
//! - [`Peg`] (CPVT): `x + dwconv3x3(x)` (zero padding, zero init) on the stride-4 tokens, after the absolute
//!   embedding, so position information follows the image at any size and aspect ratio.
//! - [`PromptFreeHead`]: per class a few learned prompt tokens fed to the frozen mask decoder as sparse prompt
//!   embeddings, batched over classes: one forward gives `[K, H/4, W/4]` logits (class 0 = background).
//! - The adapter file ([`AdapterSet::to_bytes`]/[`AdapterSet::from_bytes`]): only the trained parameters.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::config::{HieraConfig, Sam2Config};
use super::image_encoder::ImageEncoder;
use super::sam2_base::{ImageFeatures, Sam2Base};

/// `__metadata__["format"]` of an adapter file and the version this build reads.
pub const ADAPTER_FORMAT: &str = "memseg-adapter";
pub const ADAPTER_FORMAT_VERSION: &str = "1";

/// The LW-Adapter: `x + scale * up(down(x))` over the last dimension.
#[derive(Module, Debug)]
pub struct LwAdapter {
    /// d -> r (weight `[d, r]`, Burn's layout), with bias.
    pub down: Linear,
    /// r -> d, with bias; zero at initialisation.
    pub up: Linear,
    #[module(skip)]
    pub scale: f32,
}

impl LwAdapter {
    /// A fresh adapter (the identity: `up` is zero). `down` takes Burn's default (Kaiming-uniform) init.
    pub fn new(dim: usize, rank: usize, scale: f32, device: &Device) -> Self {
        Self {
            down: LinearConfig::new(dim, rank).init(device),
            up: LinearConfig::new(rank, dim).with_initializer(Initializer::Zeros).init(device),
            scale,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        x.clone() + self.up.forward(self.down.forward(x)).mul_scalar(self.scale)
    }

    /// Folds this adapter into the linear layer `next` that consumes its output, exactly:
    /// `next(x + s(x Wd + bd) Wu + s bu) = x W' + b'` with `W' = W + s Wd (Wu W)` and
    /// `b' = b + s (bd Wu + bu) W` (Burn's `y = x W + b`, `W` is `[in, out]`).
    pub fn fold_into(&self, next: &Linear) -> Linear {
        let w = next.weight.val();
        let wd = self.down.weight.val();
        let wu = self.up.weight.val();
        let s = self.scale;
        let rank = wd.dims()[1];
        let folded_w = w.clone() + wd.matmul(wu.clone().matmul(w.clone())).mul_scalar(s);
        let [_, out] = w.dims();
        let device = w.device();
        let bd = self.down.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([rank], &device));
        let bu = self.up.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([wu.dims()[1]], &device));
        let shift = (bd.unsqueeze::<2>().matmul(wu) + bu.unsqueeze::<2>()).mul_scalar(s); // [1, in]
        let b = next.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([out], &device));
        let folded_b = b + shift.matmul(w).reshape([out]);
        Linear { weight: Param::from_tensor(folded_w), bias: Some(Param::from_tensor(folded_b)) }
    }
}

/// CPVT's positional encoding generator on NHWC tokens: `x + dwconv3x3(x)`, zero padding, zero init.
#[derive(Module, Debug)]
pub struct Peg {
    pub conv: Conv2d,
}

impl Peg {
    pub fn new(channels: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([channels, channels], [3, 3])
            .with_groups(channels)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_initializer(Initializer::Zeros)
            .init(device);
        Self { conv }
    }

    /// `[B, H, W, C]` -> same.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() + self.conv.forward(x.permute([0, 3, 1, 2])).permute([0, 2, 3, 1])
    }
}

/// What is trained and where it goes (stored in the adapter file's metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterSpec {
    /// Bottleneck width r.
    pub rank: usize,
    /// The adapter's scale s.
    pub scale: f32,
    /// Adapters in front of `attn.qkv` of every block.
    pub qkv: bool,
    /// Adapters in front of `mlp.layers.0` of every block.
    pub mlp: bool,
    /// A PEG after the patch embedding.
    pub peg: bool,
    /// Label values of the classes, background (0) first; the head has one token set per entry.
    pub classes: Vec<u8>,
    /// Learned prompt tokens per class.
    pub tokens_per_class: usize,
}

impl AdapterSpec {
    pub fn new(classes: Vec<u8>) -> Self {
        Self { rank: 8, scale: 1.0, qkv: true, mlp: true, peg: true, classes, tokens_per_class: 2 }
    }
}

/// The prompt-free multi-class head: learned sparse prompts for the frozen SAM mask decoder.
#[derive(Module, Debug)]
pub struct PromptFreeHead {
    /// `[K, T, C]`: T tokens per class, in the decoder's embedding width.
    pub class_tokens: Param<Tensor<3>>,
}

impl PromptFreeHead {
    pub fn new(classes: usize, tokens: usize, dim: usize, device: &Device) -> Self {
        let t = Tensor::random([classes, tokens, dim], Distribution::Normal(0.0, 1.0), device);
        Self { class_tokens: Param::from_tensor(t) }
    }

    /// Logits `[K, H/4, W/4]` for one image's features (batch 1): the decoder runs once with the K token
    /// sets as a batch of K prompts over the same image; each class's logit map is its single-mask output.
    /// The image embedding gets `no_mem_embed`, as SAM2 does for an image with no memory.
    pub fn forward(&self, model: &Sam2Base, features: &ImageFeatures) -> Tensor<3> {
        let embed = features.image_embed().clone();
        let [_, c, h, w] = embed.dims();
        let embed = embed + model.no_mem_embed.val().reshape([1, c, 1, 1]);
        let tokens = self.class_tokens.val();
        let k = tokens.dims()[0];
        let pe = model.sam_prompt_encoder.pe_layer.forward(h, w).unsqueeze::<4>();
        let dense = model.sam_prompt_encoder.no_mask_embed.weight.val().reshape([1, c, 1, 1]).expand([k, c, h, w]);
        let [s0, s1] = features.high_res_features();
        let expand = |x: Tensor<4>| {
            let [_, ch, hh, ww] = x.dims();
            x.expand([k, ch, hh, ww])
        };
        let (masks, ..) =
            model.sam_mask_decoder.predict_masks(embed, pe, tokens, dense, true, [expand(s0), expand(s1)]);
        let [_, _, mh, mw] = masks.dims();
        masks.narrow(1, 0, 1).reshape([k, mh, mw])
    }
}

/// The trained parameters beside a frozen SAM2: the adapters live inside the model's Hiera blocks (see
/// [`AdapterSet::attach`]); the head is kept here.
#[derive(Debug)]
pub struct AdapterSet {
    pub spec: AdapterSpec,
    pub head: PromptFreeHead,
}

impl AdapterSet {
    /// Puts fresh adapters (identity) and a PEG (zero) into `model`'s encoder and makes a new head.
    pub fn attach(spec: AdapterSpec, model: &mut Sam2Base, device: &Device) -> Self {
        attach_adapters(&spec, &mut model.image_encoder, device);
        let dim = model.sam_mask_decoder.iou_token.weight.dims()[1];
        let head = PromptFreeHead::new(spec.classes.len(), spec.tokens_per_class, dim, device);
        Self { spec, head }
    }

    /// The head's logits `[K, H/4, W/4]` for one preprocessed image `[1, 3, H, W]` (H, W multiples of 32).
    pub fn logits(&self, model: &Sam2Base, image: Tensor<4>) -> Tensor<3> {
        let features = model.forward_image(image);
        self.head.forward(model, &features)
    }

    /// The label map `[H, W]` of class *indices* into `spec.classes` (on the device; no read-back): the
    /// logits upsampled bilinearly (align_corners false) to `[h, w]`, argmax over classes.
    pub fn label_indices(&self, logits: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<2, burn::tensor::Int> {
        let up = super::interpolate::bilinear(logits.unsqueeze::<4>(), [h, w], false);
        up.argmax(1).reshape([h, w])
    }

    /// The adapter file: safetensors with only the trained tensors (Burn's layout: Linear weights `[in, out]`)
    /// and `__metadata__` `format`, `format_version`, `spec` (JSON), `config` (the base SAM2 config, JSON).
    /// Reads the device's tensors back: native only.
    #[cfg(not(target_family = "wasm"))]
    pub fn to_bytes(&self, model: &Sam2Base, config: &Sam2Config) -> Result<Vec<u8>, String> {
        let mut tensors: Vec<(String, Tensor<2>)> = Vec::new();
        let mut push = |key: String, t: Tensor<2>| tensors.push((key, t));
        let trunk = &model.image_encoder.trunk;
        for (i, block) in trunk.blocks.iter().enumerate() {
            for (name, adapter) in [("attn.qkv_adapter", &block.attn.qkv_adapter), ("mlp_adapter", &block.mlp_adapter)] {
                let Some(a) = adapter else { continue };
                let p = format!("image_encoder.trunk.blocks.{i}.{name}");
                push(format!("{p}.down.weight"), a.down.weight.val());
                push(format!("{p}.up.weight"), a.up.weight.val());
                if let (Some(bd), Some(bu)) = (&a.down.bias, &a.up.bias) {
                    push(format!("{p}.down.bias"), bd.val().unsqueeze());
                    push(format!("{p}.up.bias"), bu.val().unsqueeze());
                }
            }
        }
        if let Some(peg) = &trunk.peg {
            let w = peg.conv.weight.val();
            let [c, _, kh, kw] = w.dims();
            push("image_encoder.trunk.peg.conv.weight".into(), w.reshape([c, kh * kw]));
            if let Some(b) = &peg.conv.bias {
                push("image_encoder.trunk.peg.conv.bias".into(), b.val().unsqueeze());
            }
        }
        let tokens = self.head.class_tokens.val();
        let [k, t, c] = tokens.dims();
        push("head.class_tokens".into(), tokens.reshape([k * t, c]));

        let meta = std::collections::BTreeMap::from([
            ("format", ADAPTER_FORMAT.to_string()),
            ("format_version", ADAPTER_FORMAT_VERSION.to_string()),
            ("spec", serde_json::to_string(&self.spec).map_err(|e| e.to_string())?),
            ("config", serde_json::to_string(config).map_err(|e| e.to_string())?),
        ]);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!(meta));
        let mut data = Vec::new();
        for (key, t) in tensors {
            let values = t.to_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| format!("{key}: {e:?}"))?;
            let start = data.len();
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            let entry = serde_json::json!({"dtype": "F32", "shape": t.dims(), "data_offsets": [start, data.len()]});
            header.insert(key, entry);
        }
        super::weights::safetensors_bytes(&header, data)
    }

    /// Reads an adapter file (works in wasm: no read-back), checks it was trained on `model`'s config, and
    /// puts its adapters and PEG into `model`. Every tensor of the file must be used, with its shape.
    pub fn from_bytes(bytes: &[u8], name: &str, model: &mut Sam2Base, config: &Sam2Config) -> Result<Self, String> {
        let damaged = |e: safetensors::SafeTensorError| format!("{name} is not a complete safetensors file: {e}");
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(damaged)?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(ADAPTER_FORMAT) {
            return Err(format!("{name} is not a memseg adapter file (no \"format\": \"{ADAPTER_FORMAT}\")"));
        }
        let field = |k: &str| meta.get(k).ok_or_else(|| format!("{name}: adapter metadata lacks \"{k}\""));
        if field("format_version")? != ADAPTER_FORMAT_VERSION {
            return Err(format!("{name}: adapter format version {} is not {ADAPTER_FORMAT_VERSION}", field("format_version")?));
        }
        let spec: AdapterSpec = serde_json::from_str(field("spec")?).map_err(|e| format!("{name}: spec: {e}"))?;
        let base = Sam2Config::from_json(field("config")?).map_err(|e| format!("{name}: {e}"))?;
        if base.image_encoder != config.image_encoder {
            return Err(format!("{name} was trained on another image encoder than these weights' ({:?})", base.image_encoder.trunk));
        }
        let st = SafeTensors::deserialize(bytes).map_err(damaged)?;
        let device = model.device();
        let mut unused: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        let mut take = |key: &str, shape: &[usize]| -> Result<Tensor<2>, String> {
            let view = st.tensor(key).map_err(|_| format!("{name}: missing tensor '{key}'"))?;
            let want: usize = shape.iter().product();
            if view.dtype() != safetensors::Dtype::F32 || view.shape().iter().product::<usize>() != want {
                return Err(format!("{name}: tensor '{key}' is {:?} {:?}, expected F32 {shape:?}", view.dtype(), view.shape()));
            }
            unused.retain(|k| k != key);
            let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            Ok(Tensor::from_data(TensorData::new(values, [shape[0], want / shape[0]]), &device))
        };
        attach_adapters(&spec, &mut model.image_encoder, &device);
        let trunk = &mut model.image_encoder.trunk;
        for (i, block) in trunk.blocks.iter_mut().enumerate() {
            for (nm, adapter) in [("attn.qkv_adapter", &mut block.attn.qkv_adapter), ("mlp_adapter", &mut block.mlp_adapter)] {
                let Some(a) = adapter else { continue };
                let p = format!("image_encoder.trunk.blocks.{i}.{nm}");
                let [d, r] = a.down.weight.dims();
                a.down.weight = Param::from_tensor(take(&format!("{p}.down.weight"), &[d, r])?);
                a.up.weight = Param::from_tensor(take(&format!("{p}.up.weight"), &[r, d])?);
                a.down.bias = Some(Param::from_tensor(take(&format!("{p}.down.bias"), &[1, r])?.reshape([r])));
                a.up.bias = Some(Param::from_tensor(take(&format!("{p}.up.bias"), &[1, d])?.reshape([d])));
            }
        }
        if let Some(peg) = &mut trunk.peg {
            let [c, _, kh, kw] = peg.conv.weight.dims();
            peg.conv.weight = Param::from_tensor(take("image_encoder.trunk.peg.conv.weight", &[c, kh * kw])?.reshape([c, 1, kh, kw]));
            peg.conv.bias = Some(Param::from_tensor(take("image_encoder.trunk.peg.conv.bias", &[1, c])?.reshape([c])));
        }
        let dim = model.sam_mask_decoder.iou_token.weight.dims()[1];
        let (k, t) = (spec.classes.len(), spec.tokens_per_class);
        let tokens = take("head.class_tokens", &[k * t, dim])?.reshape([k, t, dim]);
        if !unused.is_empty() {
            return Err(format!("{name}: unexpected tensors {unused:?} for its spec"));
        }
        Ok(Self { spec, head: PromptFreeHead { class_tokens: Param::from_tensor(tokens) } })
    }
}

/// Fresh adapters and PEG as `spec` places them (existing ones are replaced).
pub fn attach_adapters(spec: &AdapterSpec, encoder: &mut ImageEncoder, device: &Device) {
    let trunk = &mut encoder.trunk;
    for block in trunk.blocks.iter_mut() {
        let d_in = block.attn.qkv.weight.dims()[0];
        let d_out = block.mlp.layers[0].weight.dims()[0];
        block.attn.qkv_adapter = spec.qkv.then(|| LwAdapter::new(d_in, spec.rank, spec.scale, device));
        block.mlp_adapter = spec.mlp.then(|| LwAdapter::new(d_out, spec.rank, spec.scale, device));
    }
    let c = trunk.patch_embed.proj.weight.dims()[0];
    trunk.peg = spec.peg.then(|| Peg::new(c, device));
}

/// Structural re-parameterization: every adapter folded into the linear layer after it and removed. The
/// result is the plain Hiera (plus the PEG, which has no linear layer to fold into).
pub fn fold_encoder(mut encoder: ImageEncoder) -> ImageEncoder {
    for block in encoder.trunk.blocks.iter_mut() {
        if let Some(a) = block.attn.qkv_adapter.take() {
            block.attn.qkv = a.fold_into(&block.attn.qkv);
        }
        if let Some(a) = block.mlp_adapter.take() {
            block.mlp.layers[0] = a.fold_into(&block.mlp.layers[0]);
        }
    }
    encoder
}

/// Multiply-accumulates of the image encoder (trunk + FPN laterals) on an `h x w` input, counted analytically
/// (formulas in `docs/adapters.md`): linear layers over every token they run on (window padding included),
/// attention's two matrix products, convolutions; norms, activations, softmax and pooling are not MACs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EncoderMacs {
    pub base: u64,
    /// The adapters' own MACs (unfolded form).
    pub adapters: u64,
    /// The PEG's MACs (present in both forms).
    pub peg: u64,
}

impl EncoderMacs {
    pub fn unfolded(&self) -> u64 {
        self.base + self.adapters + self.peg
    }
    pub fn folded(&self) -> u64 {
        self.base + self.peg
    }
}

pub fn count_macs(config: &Sam2Config, spec: Option<&AdapterSpec>, [h, w]: [usize; 2]) -> EncoderMacs {
    let t: &HieraConfig = &config.image_encoder.trunk;
    let c0 = t.embed_dim as u64;
    let (mut hh, mut ww) = ((h / 4) as u64, (w / 4) as u64);
    let mut m = EncoderMacs { base: 7 * 7 * 3 * c0 * hh * ww, ..Default::default() };
    let r = spec.map_or(0, |s| s.rank as u64);
    if spec.is_some_and(|s| s.peg) {
        m.peg = 9 * c0 * hh * ww; // depthwise 3x3
    }
    let stride = t.q_stride[0] as u64;
    let mut stage_maps = Vec::new();
    let ends = t.stage_ends();
    for (i, b) in t.blocks().iter().enumerate() {
        let (d, dout) = (b.dim as u64, b.dim_out as u64);
        let ws = b.window_size as u64;
        let pool = if b.q_pool { stride } else { 1 };
        // Tokens qkv runs on (padded windows) and the attention products.
        let (n_in, n_out, attn) = if ws > 0 {
            let (ph, pw) = (hh.div_ceil(ws) * ws, ww.div_ceil(ws) * ws);
            let windows = (ph / ws) * (pw / ws);
            let (nk, nq) = (ws * ws, (ws / pool) * (ws / pool));
            (ph * pw, windows * nq, windows * nq * nk * dout * 2)
        } else {
            let n = hh * ww;
            (n, n / (pool * pool), (n / (pool * pool)) * n * dout * 2)
        };
        m.base += n_in * d * 3 * dout + attn + n_out * dout * dout;
        if d != dout {
            m.base += hh * ww * d * dout; // shortcut projection
        }
        hh /= pool;
        ww /= pool;
        let tokens = hh * ww;
        m.base += tokens * dout * 4 * dout * 2; // MLP
        if let Some(s) = spec {
            if s.qkv {
                m.adapters += n_in * 2 * d * r;
            }
            if s.mlp {
                m.adapters += tokens * 2 * dout * r;
            }
        }
        if ends.contains(&i) {
            stage_maps.push((hh * ww, dout));
        }
    }
    let d_model = config.image_encoder.neck.d_model as u64;
    m.base += stage_maps.iter().map(|(n, c)| n * c * d_model).sum::<u64>();
    m
}

/// Trained parameters of a spec on a config (what the adapter file holds, in values).
pub fn trainable_parameters(config: &Sam2Config, spec: &AdapterSpec) -> usize {
    let t = &config.image_encoder.trunk;
    let r = spec.rank;
    let mut n = 0;
    for b in t.blocks() {
        if spec.qkv {
            n += b.dim * r + r + r * b.dim + b.dim;
        }
        if spec.mlp {
            n += b.dim_out * r + r + r * b.dim_out + b.dim_out;
        }
    }
    if spec.peg {
        n += t.embed_dim * 10;
    }
    n + spec.classes.len() * spec.tokens_per_class * config.image_encoder.neck.d_model
}
