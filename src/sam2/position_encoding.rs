//! `sam2/modeling/position_encoding.py`: the sine position encoding of the FPN levels and memories, the
//! prompt encoder's random Fourier features, and the axial rotary encoding of the memory attention.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

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

/// `PositionEmbeddingRandom`: random Fourier features of (x, y) in [0, 1]², the prompt encoder's `pe_layer`.
/// The frequency matrix is a buffer in Meta's code but part of the checkpoint, so it is a `Param` here.
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom {
    /// `[2, num_pos_feats]`: row 0 multiplies x, row 1 multiplies y.
    pub positional_encoding_gaussian_matrix: Param<Tensor<2>>,
}

impl PositionEmbeddingRandom {
    /// Meta's init draws N(0, 1) (scale 1); the checkpoint overwrites it.
    pub fn new(num_pos_feats: usize, device: &Device) -> Self {
        let matrix = Tensor::random([2, num_pos_feats], Distribution::Normal(0.0, 1.0), device);
        Self { positional_encoding_gaussian_matrix: Param::from_tensor(matrix) }
    }

    /// `_pe_encoding`: `[..., 2]` coordinates in [0, 1] -> `[..., 2 * num_pos_feats]` = `[sin, cos]` of
    /// `2π (2c - 1) G`.
    fn pe_encoding<const D: usize>(&self, coords: Tensor<D>) -> Tensor<D> {
        let g = self.positional_encoding_gaussian_matrix.val();
        let [_, f] = g.dims();
        let coords = coords.mul_scalar(2.0).sub_scalar(1.0);
        // coords @ G as a broadcast matmul over the leading dims.
        let mut shape = [1usize; D];
        shape[D - 2] = 2;
        shape[D - 1] = f;
        let coords = coords.matmul(g.reshape(shape)).mul_scalar(2.0 * std::f32::consts::PI);
        Tensor::cat(vec![coords.clone().sin(), coords.cos()], D - 1)
    }

    /// `forward(size)`: the encoding of the pixel centres of an `h x w` grid, `[2 * num_pos_feats, h, w]`.
    pub fn forward(&self, h: usize, w: usize) -> Tensor<3> {
        let device = self.positional_encoding_gaussian_matrix.device();
        // (cumsum of ones - 0.5) / size, as Meta computes it in f32.
        let mut grid = Vec::with_capacity(h * w * 2);
        for y in 0..h {
            for x in 0..w {
                grid.push((x as f32 + 1.0 - 0.5) / w as f32);
                grid.push((y as f32 + 1.0 - 0.5) / h as f32);
            }
        }
        let coords = Tensor::<3>::from_data(TensorData::new(grid, [h, w, 2]), &device);
        self.pe_encoding(coords).permute([2, 0, 1])
    }

    /// `forward_with_coords`: pixel coordinates `[B, N, 2]` (x, y) of an image of `[h, w]` -> `[B, N, C]`.
    pub fn forward_with_coords(&self, coords: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<3> {
        let device = coords.device();
        let scale = Tensor::<1>::from_data(TensorData::new(vec![w as f32, h as f32], [2]), &device);
        self.pe_encoding(coords / scale.reshape([1, 1, 2]))
    }
}

/// `compute_axial_cis` as real tables: `(cos, sin)`, each `[end_x * end_y, dim / 2]`, of the angles
/// `t_x * f_i` (columns `0..dim/4`) and `t_y * f_i` (columns `dim/4..dim/2`), `f_i = theta^(-4i / dim)`,
/// token `n` at `x = n mod end_x`, `y = n div end_x`. Column `j` rotates the channel pair `(2j, 2j + 1)`.
///
/// Computed on the CPU (angles in f32 as Meta's `torch.outer`, cos/sin in f64 then rounded, so the tables are
/// the correctly rounded values of Meta's f32 angles on every backend) and uploaded.
pub fn compute_axial_cis(dim: usize, end_x: usize, end_y: usize, theta: f32, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let quarter = dim / 4;
    let freqs: Vec<f32> = (0..quarter).map(|i| 1.0 / theta.powf((4 * i) as f32 / dim as f32)).collect();
    let n = end_x * end_y;
    let (mut cos, mut sin) = (Vec::with_capacity(n * 2 * quarter), Vec::with_capacity(n * 2 * quarter));
    for t in 0..n {
        let (tx, ty) = ((t % end_x) as f32, (t / end_x) as f32);
        for pos in [tx, ty] {
            for &f in &freqs {
                let angle = (pos * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
    }
    let table = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [n, 2 * quarter]), device);
    (table(cos), table(sin))
}

/// Rotates `[B, H, N, D]` by the tables `[N, D/2]` (channel pairs as complex numbers times `cos + i sin`).
fn rotate(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [b, h, n, d] = x.dims();
    let pairs = x.reshape([b, h, n, d / 2, 2]);
    let re = pairs.clone().narrow(4, 0, 1).reshape([b, h, n, d / 2]);
    let im = pairs.narrow(4, 1, 1).reshape([b, h, n, d / 2]);
    let (c, s) = (cos.clone().reshape([1, 1, n, d / 2]), sin.clone().reshape([1, 1, n, d / 2]));
    let out_re = re.clone() * c.clone() - im.clone() * s.clone();
    let out_im = re * s + im * c;
    Tensor::stack::<5>(vec![out_re, out_im], 4).reshape([b, h, n, d])
}

/// `apply_rotary_enc`: rotates the queries `[B, H, Nq, D]` by the tables of their `Nq` positions, and the
/// keys `[B, H, Nk, D]` by the same tables, tiled `Nk / Nq` times when `repeat_freqs_k` (keys of several
/// memory frames, each laid out like the queries). Keys may be empty (`Nk = 0`): returned as they are.
pub fn apply_rotary_enc(
    xq: Tensor<4>,
    xk: Tensor<4>,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    repeat_freqs_k: bool,
) -> (Tensor<4>, Tensor<4>) {
    let q = rotate(xq, cos, sin);
    let nk = xk.dims()[2];
    if nk == 0 {
        return (q, xk);
    }
    let nq = cos.dims()[0];
    let k = if repeat_freqs_k && nk != nq {
        let r = nk / nq;
        rotate(xk, &cos.clone().repeat_dim(0, r), &sin.clone().repeat_dim(0, r))
    } else {
        rotate(xk, cos, sin)
    };
    (q, k)
}
