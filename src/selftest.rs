//! A small fixed computation (conv 3x3 + exact GELU + matmul) that exercises the ops SAM2 leans on.
//!
//! The page runs it in the browser (WebGPU or the CPU fallback) and the CLI runs it natively
//! (`memseg selftest`); the browser tests compare the two, and the unit tests compare it with a plain-Rust
//! loop implementation. Inputs come from closed-form formulas so every side can rebuild them exactly.

use burn::tensor::{Device, Tensor, TensorData, activation, module, ops::ConvOptions};
use serde::Serialize;

pub const IN_CHANNELS: usize = 3;
pub const OUT_CHANNELS: usize = 8;
pub const SIDE: usize = 16;
pub const OUTPUTS: usize = 5;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SelfTestResult {
    /// `[OUT_CHANNELS, OUTPUTS]`
    pub shape: [usize; 2],
    pub values: Vec<f32>,
}

pub fn input_value(i: usize) -> f32 {
    (0.37 * i as f32).sin()
}
pub fn conv_weight_value(i: usize) -> f32 {
    0.3 * (0.11 * i as f32).cos()
}
pub fn conv_bias_value(o: usize) -> f32 {
    0.05 * o as f32 - 0.2
}
/// Projection `[SIDE*SIDE, OUTPUTS]`, row-major.
pub fn projection_value(k: usize, m: usize) -> f32 {
    (0.013 * (k * (m + 1)) as f32).sin() / SIDE as f32
}

fn filled(len: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..len).map(f).collect()
}

/// Runs the computation on `device` and reads the result back without blocking (required in the browser).
pub async fn run(device: &Device) -> Result<SelfTestResult, String> {
    let pixels = SIDE * SIDE;
    let x = Tensor::<4>::from_data(
        TensorData::new(filled(IN_CHANNELS * pixels, input_value), [1, IN_CHANNELS, SIDE, SIDE]),
        device,
    );
    let w = Tensor::<4>::from_data(
        TensorData::new(filled(OUT_CHANNELS * IN_CHANNELS * 9, conv_weight_value), [OUT_CHANNELS, IN_CHANNELS, 3, 3]),
        device,
    );
    let b = Tensor::<1>::from_data(TensorData::new(filled(OUT_CHANNELS, conv_bias_value), [OUT_CHANNELS]), device);
    let p = Tensor::<2>::from_data(
        TensorData::new(filled(pixels * OUTPUTS, |i| projection_value(i / OUTPUTS, i % OUTPUTS)), [pixels, OUTPUTS]),
        device,
    );
    let y = module::conv2d(x, w, Some(b), ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    let y = activation::gelu(y).reshape([OUT_CHANNELS, pixels]).matmul(p);
    let data = y.into_data_async().await.map_err(|e| format!("reading the result back failed: {e:?}"))?;
    let values = data.try_to_vec::<f32>().map_err(|e| format!("unexpected result type: {e:?}"))?;
    Ok(SelfTestResult { shape: [OUT_CHANNELS, OUTPUTS], values })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same computation with plain loops in f64, independent of Burn.
    fn reference() -> Vec<f32> {
        let gelu = |v: f64| 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
        let x = |c: usize, i: isize, j: isize| -> f64 {
            let inside = (0..SIDE as isize).contains(&i) && (0..SIDE as isize).contains(&j);
            if inside { input_value(c * SIDE * SIDE + i as usize * SIDE + j as usize) as f64 } else { 0.0 }
        };
        let mut out = vec![0.0f64; OUT_CHANNELS * OUTPUTS];
        for o in 0..OUT_CHANNELS {
            for i in 0..SIDE {
                for j in 0..SIDE {
                    let mut acc = conv_bias_value(o) as f64;
                    for c in 0..IN_CHANNELS {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let wi = ((o * IN_CHANNELS + c) * 3 + ky) * 3 + kx;
                                acc += conv_weight_value(wi) as f64
                                    * x(c, i as isize + ky as isize - 1, j as isize + kx as isize - 1);
                            }
                        }
                    }
                    let k = i * SIDE + j;
                    for m in 0..OUTPUTS {
                        out[o * OUTPUTS + m] += gelu(acc) * projection_value(k, m) as f64;
                    }
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "element {i}: got {g}, want {w}");
        }
    }

    #[test]
    fn flex_matches_plain_rust_reference() {
        let result = pollster::block_on(run(&Device::flex())).unwrap();
        assert_eq!(result.shape, [OUT_CHANNELS, OUTPUTS]);
        assert_close(&result.values, &reference(), 1e-5);
    }

    /// Runs where a Vulkan/Metal/DX12 adapter exists (lavapipe on CPU machines); says so when skipped.
    #[test]
    fn wgpu_matches_flex_when_an_adapter_exists() {
        let compute = match crate::backend::init_native(crate::backend::Preference::Wgpu) {
            Ok(c) => c,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let gpu = pollster::block_on(run(&compute.device)).unwrap();
        let cpu = pollster::block_on(run(&Device::flex())).unwrap();
        assert_close(&gpu.values, &cpu.values, 1e-5);
    }
}
