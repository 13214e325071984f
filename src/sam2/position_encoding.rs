//! `sam2/modeling/position_encoding.py`: the sine position encoding of the FPN levels and memories.

use burn::tensor::{Device, Tensor, TensorData};

/// `PositionEmbeddingSine` with `normalize=True` and scale 2π, for a `[h, w]` map: `[1, num_pos_feats, h, w]`.
///
/// It depends only on the map size, so it is computed on the CPU (in f32, as Meta does) and uploaded.
/// Channels are `[y-half, x-half]`; within each half, even channels are sines and odd ones cosines.
pub fn sine_position_encoding(num_pos_feats: usize, temperature: f32, h: usize, w: usize, device: &Device) -> Tensor<4> {
    let half = num_pos_feats / 2;
    let scale = 2.0 * std::f32::consts::PI;
    let eps = 1e-6f32;
    let dim_t: Vec<f32> =
        (0..half).map(|i| temperature.powf((2 * (i / 2)) as f32 / half as f32)).collect();
    let embed = |pos: usize, len: usize| (pos as f32 + 1.0) / (len as f32 + eps) * scale;
    let mut data = vec![0f32; num_pos_feats * h * w];
    for c in 0..num_pos_feats {
        let (along_y, i) = if c < half { (true, c) } else { (false, c - half) };
        for y in 0..h {
            for x in 0..w {
                let v = if along_y { embed(y, h) } else { embed(x, w) } / dim_t[i];
                data[(c * h + y) * w + x] = if i % 2 == 0 { v.sin() } else { v.cos() };
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [1, num_pos_feats, h, w]), device)
}
