//! Small shared pieces of `sam2/modeling/sam2_utils.py`.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, activation};

/// The activation between MLP layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    /// Exact (erf) GELU, as `nn.GELU()`.
    Gelu,
}

/// `sam2_utils.MLP`: `num_layers` linear layers with the activation between them.
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    #[module(skip)]
    act: Act,
    #[module(skip)]
    sigmoid_output: bool,
}

impl Mlp {
    pub fn new(input: usize, hidden: usize, output: usize, num_layers: usize, act: Act, device: &Device) -> Self {
        let dims: Vec<usize> = std::iter::once(input)
            .chain(std::iter::repeat_n(hidden, num_layers - 1))
            .chain(std::iter::once(output))
            .collect();
        let layers = dims.windows(2).map(|d| LinearConfig::new(d[0], d[1]).init(device)).collect();
        Self { layers, act, sigmoid_output: false }
    }

    pub fn with_sigmoid_output(mut self) -> Self {
        self.sigmoid_output = true;
        self
    }

    pub fn forward<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = match self.act {
                    Act::Relu => activation::relu(x),
                    Act::Gelu => activation::gelu(x),
                };
            }
        }
        if self.sigmoid_output { activation::sigmoid(x) } else { x }
    }
}

/// `sam2_utils.LayerNorm2d`: LayerNorm over the channels of an NCHW map (eps 1e-6), used by the mask
/// decoder's upscaling, the prompt encoder's mask path and the memory encoder.
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
}

impl LayerNorm2d {
    const EPS: f64 = 1e-6;

    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c = self.weight.dims()[0];
        let mean = x.clone().mean_dim(1);
        let centered = x - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(1);
        let normed = centered / (var + Self::EPS).sqrt();
        normed * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }
}
