//! Prompt-free segmentation with a trained adapter file (`sam2::adapter`, `docs/adapters.md`): no masks, a
//! label map for every slice from one encoder and one decoder pass. The volume job ([`crate::job`]) runs it
//! for `memseg segment --adapter` and for the page alike, so both produce the same label maps from the same
//! 8-bit slices.
//!
//! Each slice (already mapped to 8 bits, as for the few-shot path) is resized bilinearly to its size rounded up
//! to a multiple of 32 (Hiera's total stride; the PEG makes any such size and aspect ratio valid), encoded once
//! by the folded encoder, decoded by the class tokens, and its label map (argmax of the logits upsampled to
//! the rounded size, then nearest back to the slice's size) holds the class values (0 = background).

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

use crate::sam2::adapter::{self, AdapterSet};
use crate::sam2::transforms::imagenet_planar;
use crate::sam2::{Sam2Base, Sam2Config};

/// A SAM2 model with an adapter file's LW-Adapters folded into its encoder (plus the PEG), and the file's
/// class tokens. Built from a clone of the loaded model: Burn modules share their parameter tensors, so only
/// the folded `qkv` / `mlp.layers.0` weights are new memory.
pub struct PromptFree {
    pub model: Sam2Base,
    pub set: AdapterSet,
    /// The adapter file's name, for messages and the report.
    pub name: String,
}

impl PromptFree {
    /// Reads the adapter file (`name` is used in messages), checks it against `config` (the config `model`
    /// was built from) and folds it: inference then costs the plain encoder plus the PEG.
    pub fn load(mut model: Sam2Base, config: &Sam2Config, bytes: &[u8], name: &str) -> Result<Self, String> {
        let set = AdapterSet::from_bytes(bytes, name, &mut model, config)?;
        model.image_encoder = adapter::fold_encoder(model.image_encoder);
        Ok(Self { model, set, name: name.to_string() })
    }

    /// The label values segmented (background 0 left out), as the reports list them.
    pub fn foreground(&self) -> Vec<u8> {
        self.set.spec.classes.iter().copied().filter(|&c| c != 0).collect()
    }

    /// The label map of one 8-bit slice (`[h * w]` class values at the slice's own size). Async for the
    /// browser's GPU read-back; natively `pollster::block_on` it.
    pub async fn segment(&self, image: &RgbImage) -> Result<Vec<u8>, String> {
        let (w0, h0) = image.dimensions();
        if w0 == 0 || h0 == 0 {
            return Err("an empty slice (0 pixels) cannot be segmented".into());
        }
        let (input, [h, w]) = model_input(image, &self.model.device());
        let labels = self.set.label_indices(self.set.logits(&self.model, input), [h, w]);
        let data = labels.into_data_async().await.map_err(|e| format!("reading the label map from the device failed: {e:?}"))?;
        let indices = data.convert::<i64>().try_into_vec::<i64>().map_err(|e| format!("{e:?}"))?;
        let classes = &self.set.spec.classes;
        let values: Vec<u8> = indices.iter().map(|&i| classes.get(i as usize).copied().unwrap_or(0)).collect();
        if [w, h] == [w0 as usize, h0 as usize] {
            return Ok(values);
        }
        let map = image::GrayImage::from_raw(w as u32, h as u32, values).ok_or("label map size mismatch")?;
        Ok(image::imageops::resize(&map, w0, h0, image::imageops::FilterType::Nearest).into_raw())
    }
}

/// The model input `[1, 3, H, W]` (ImageNet-normalised, as SAM2's transforms and `memseg train`) at the
/// slice's size rounded up to multiples of 32, and that size.
pub fn model_input(image: &RgbImage, device: &Device) -> (Tensor<4>, [usize; 2]) {
    let (w0, h0) = image.dimensions();
    let (h, w) = ((h0 as usize).next_multiple_of(32), (w0 as usize).next_multiple_of(32));
    let resized;
    let pixels = if [w, h] == [w0 as usize, h0 as usize] {
        image
    } else {
        resized = image::imageops::resize(image, w as u32, h as u32, image::imageops::FilterType::Triangle);
        &resized
    };
    let planar = imagenet_planar(pixels.as_raw(), |v| v);
    (Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device), [h, w])
}
