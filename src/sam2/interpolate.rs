//! `torch.nn.functional.interpolate(align_corners=False)` as SAM2 uses it: bilinear, with and without
//! `antialias`, on masks (the conditioning mask to the model size and to the low-resolution size, the
//! low-resolution logits back to the model or video size), bicubic on Hiera's position embedding.
//!
//! These resamplings are separable, so each is two matrix products with weight matrices built here on the
//! CPU from PyTorch's own formulas (`upsample_bilinear2d`, `_upsample_bilinear2d_aa`, `upsample_bicubic2d`
//! in ATen). That matches PyTorch on every backend, antialiased downsampling included (which Burn's
//! interpolate lacks), and avoids Burn's bicubic kernel, which loses the device on SwiftShader's WebGPU.

use burn::tensor::{Device, Tensor, TensorData};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    Bilinear,
    /// Bilinear with `antialias=True`: a widened triangle when shrinking.
    BilinearAntialiased,
    /// Keys' cubic convolution with a = -0.75, as PyTorch.
    Bicubic,
}

/// Resamples the last two dimensions of `[B, C, H, W]` to `[out_h, out_w]` (bilinear).
pub fn bilinear(x: Tensor<4>, size: [usize; 2], antialias: bool) -> Tensor<4> {
    resample(x, size, if antialias { Filter::BilinearAntialiased } else { Filter::Bilinear })
}

/// Resamples the last two dimensions of `[B, C, H, W]` to `[out_h, out_w]` (bicubic, no antialias).
pub fn bicubic(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    resample(x, size, Filter::Bicubic)
}

fn resample(x: Tensor<4>, [out_h, out_w]: [usize; 2], filter: Filter) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    if [h, w] == [out_h, out_w] {
        return x;
    }
    let device = x.device();
    let rows = weights(h, out_h, filter, &device); // [out_h, h]
    let cols = weights(w, out_w, filter, &device).transpose(); // [w, out_w]
    let x = x.reshape([b * c, h, w]);
    let y = rows.unsqueeze::<3>().matmul(x).matmul(cols.unsqueeze::<3>());
    y.reshape([b, c, out_h, out_w])
}

/// The `[out, in]` matrix of one axis.
fn weights(input: usize, output: usize, filter: Filter, device: &Device) -> Tensor<2> {
    let mut m = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    for (o, row) in m.chunks_exact_mut(input).enumerate() {
        match filter {
            Filter::BilinearAntialiased if scale > 1.0 => antialiased_row(o, scale, row),
            Filter::Bilinear | Filter::BilinearAntialiased => bilinear_row(o, scale, row),
            Filter::Bicubic => bicubic_row(o, scale, row),
        }
    }
    Tensor::from_data(TensorData::new(m, [output, input]), device)
}

/// `upsample_bicubic2d` (align_corners=False): four taps, the source position not clamped, the taps'
/// indices clamped to the input (so edge pixels take the weight of taps outside).
fn bicubic_row(o: usize, scale: f64, row: &mut [f32]) {
    const A: f64 = -0.75;
    let src = (o as f64 + 0.5) * scale - 0.5;
    let i0 = src.floor();
    let t = src - i0;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
    let last = row.len() as i64 - 1;
    for (k, wt) in taps.into_iter().enumerate() {
        let idx = (i0 as i64 - 1 + k as i64).clamp(0, last) as usize;
        row[idx] += wt as f32;
    }
}

/// `upsample_bilinear2d` (align_corners=False): two taps around the source position, clamped at the edges.
fn bilinear_row(o: usize, scale: f64, row: &mut [f32]) {
    let last = row.len() - 1;
    let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(last);
    let i1 = (i0 + 1).min(last);
    let frac = (src - i0 as f64) as f32;
    row[i0] += 1.0 - frac;
    row[i1] += frac;
}

/// `_upsample_bilinear2d_aa` when shrinking: a triangle filter widened by the scale, normalised per output.
fn antialiased_row(o: usize, scale: f64, row: &mut [f32]) {
    let support = scale; // bilinear support 1.0, times the scale
    let center = scale * (o as f64 + 0.5);
    // C++ casts truncate toward zero; then clamp to the input, as ATen does.
    let lo = ((center - support + 0.5) as i64).max(0) as usize;
    let hi = ((center + support + 0.5) as i64).min(row.len() as i64) as usize;
    let taps: Vec<f64> = (lo..hi).map(|j| (1.0 - ((j as f64 - center + 0.5) / scale).abs()).max(0.0)).collect();
    let total: f64 = taps.iter().sum();
    for (j, t) in (lo..hi).zip(taps) {
        row[j] = (t / total) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn rows_sum_to_one() {
        let device = Device::flex();
        for (i, o, f) in [(256, 1024, Filter::Bilinear), (1024, 256, Filter::BilinearAntialiased), (300, 128, Filter::BilinearAntialiased), (7, 5, Filter::Bilinear), (7, 256, Filter::Bicubic), (7, 32, Filter::Bicubic)] {
            let w = weights(i, o, f, &device).sum_dim(1).into_data().try_to_vec::<f32>().unwrap();
            assert!(w.iter().all(|s| (s - 1.0).abs() < 1e-6), "{i}->{o}");
        }
    }

    /// Values printed by PyTorch 2.15 (`F.interpolate(torch.arange(8.).view(1,1,1,8), size=(1,2),
    /// mode="bilinear", align_corners=False, antialias=...)`): antialiased [1.8929, 5.1071] (6 taps,
    /// clipped at the edges and renormalised) against plain [1.5, 5.5]; antialiased to 3: [1.1053, 3.5, 5.8947];
    /// upsampling [0, 1] to 4 (either mode): [0, 0.25, 0.75, 1].
    #[test]
    fn matches_pytorch_on_small_cases() {
        let device = Device::flex();
        let ramp = |n: usize| Tensor::<4>::from_data(TensorData::new((0..n).map(|v| v as f32).collect(), [1, 1, 1, n]), &device);
        let close = |a: Vec<f32>, b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(values(bilinear(ramp(8), [1, 2], true)), &[1.892857, 5.107143]));
        assert!(close(values(bilinear(ramp(8), [1, 2], false)), &[1.5, 5.5]));
        assert!(close(values(bilinear(ramp(8), [1, 3], true)), &[1.105263, 3.5, 5.894737]));
        for aa in [false, true] {
            assert!(close(values(bilinear(ramp(2), [1, 4], aa)), &[0.0, 0.25, 0.75, 1.0]));
        }
        // `F.interpolate(torch.tensor([0., 1, 4, 2]).view(1,1,1,4), size=(1,9), mode="bicubic")` (and size 3).
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 1.0, 4.0, 2.0], [1, 1, 1, 4]), &device);
        let up = [-0.108667, 0.091435, 0.297541, 1.173226, 2.78125, 3.94483, 3.575403, 2.339121, 1.782665];
        assert!(close(values(bicubic(x.clone(), [1, 9])), &up));
        assert!(close(values(bicubic(x, [1, 3])), &[0.091435, 2.78125, 2.33912]));
    }
}
