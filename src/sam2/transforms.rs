//! Preprocessing as Meta's video predictor does it (`sam2/utils/misc.py`, `_load_img_as_tensor`): RGB resized
//! to the square model size without keeping the aspect ratio, scaled to [0, 1], then ImageNet mean/std.
//!
//! Resize filter: Meta uses PIL's `resize((S, S))`, whose default is BICUBIC (a = -0.5, support widened by the
//! scale when shrinking, so antialiased), computed in 22-bit fixed point in two 8-bit passes, horizontal first.
//! [`resize_like_pil`] reproduces that arithmetic exactly (no Rust crate does: the `image` crate's Catmull-Rom
//! is the same kernel in one float pass and differs from PIL by up to 5 levels at edges), so our model input is
//! bit-identical to Meta's. `tests/encoder_parity.rs` checks it on the fixtures' image.
//! (Meta's image predictor instead uses torchvision's antialiased *bilinear* resize on floats; the video path
//! is the one the few-shot protocols use.)

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `[1, 3, size, size]`, normalised, from an 8-bit RGB image of any size.
pub fn preprocess_rgb8(image: &RgbImage, size: usize, device: &Device) -> Tensor<4> {
    let resized = resize_like_pil(image, size as u32, size as u32);
    let data = imagenet_planar(resized.as_raw(), |v| v);
    Tensor::from_data(TensorData::new(data, [1, 3, size, size]), device)
}

/// Interleaved 8-bit RGB pixels as planar `[3, pixels]` values normalised with ImageNet's mean and std, as
/// Meta's `SAM2Transforms` does; `unit` may change each value in [0, 1] first (training's brightness jitter).
/// The one place the model's input normalisation is written: SAM2's preprocessing, prompt-free inference and
/// adapter training all call it.
pub fn imagenet_planar(rgb: &[u8], unit: impl Fn(f32) -> f32) -> Vec<f32> {
    let plane = rgb.len() / 3;
    let mut data = vec![0f32; 3 * plane];
    for (i, pixel) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = (unit(pixel[c] as f32 / 255.0) - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    data
}

/// PIL's bicubic kernel (`Resample.c`, a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point precision of PIL's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output index: the first input index and the fixed-point weights (`precompute_coeffs` followed by
/// `normalize_coeffs_8bpc` in PIL).
fn pil_coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero; clamping to the image afterwards as PIL does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> =
                (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) / filterscale)).collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w } * (1u64 << PRECISION_BITS) as f64;
                    if w < 0.0 { (w - 0.5) as i32 } else { (w + 0.5) as i32 }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// One 8-bit pass: `out[i] = clip8(sum(in[first + k] * w[k]))` with PIL's rounding.
fn pil_pass(input: impl Fn(usize) -> u8, coefficients: &(usize, Vec<i32>)) -> u8 {
    let (first, weights) = coefficients;
    let mut sum: i32 = 1 << (PRECISION_BITS - 1);
    for (k, &w) in weights.iter().enumerate() {
        sum += input(first + k) as i32 * w;
    }
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `PIL.Image.resize((width, height))` with the default BICUBIC filter, bit for bit: horizontal pass, rounding
/// to 8 bits, then vertical pass. A pass is skipped when its size does not change, as in PIL.
pub fn resize_like_pil(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w0, h0) = (image.width() as usize, image.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    let horizontal = if w1 == w0 {
        image.clone()
    } else {
        let coeffs = pil_coefficients(w0, w1);
        RgbImage::from_fn(width, h0 as u32, |x, y| {
            let c = &coeffs[x as usize];
            image::Rgb(std::array::from_fn(|ch| pil_pass(|i| image.get_pixel(i as u32, y)[ch], c)))
        })
    };
    if h1 == h0 {
        return horizontal;
    }
    let coeffs = pil_coefficients(h0, h1);
    RgbImage::from_fn(width, height, |x, y| {
        let c = &coeffs[y as usize];
        image::Rgb(std::array::from_fn(|ch| pil_pass(|i| horizontal.get_pixel(x, i as u32)[ch], c)))
    })
}
