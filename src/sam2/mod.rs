//! The SAM2 / SAM2.1 port. One file per component of Meta's `sam2/modeling/` package, named after it:
//!
//! | file | Meta's module |
//! |---|---|
//! | `config.rs` | `configs/sam2.1/*.yaml` |
//! | `hiera.rs` | `backbones/hieradet.py` (+ `backbones/utils.py`) |
//! | `image_encoder.rs` | `backbones/image_encoder.py` (FPN neck, scalp) |
//! | `position_encoding.rs` | `position_encoding.py` |
//! | `sam2_utils.rs` | `sam2_utils.py` |
//! | `prompt_encoder.rs` | `sam/prompt_encoder.py` |
//! | `transformer.rs` | `sam/transformer.py` (attention, RoPE attention, two-way transformer) |
//! | `mask_decoder.rs` | `sam/mask_decoder.py` |
//! | `memory_attention.rs` | `memory_attention.py` |
//! | `memory_encoder.rs` | `memory_encoder.py` |
//! | `memory_bank.rs` | the video predictor's per-object `output_dict` (which memories a frame attends to) |
//! | `interpolate.rs` | `F.interpolate(mode="bilinear")`, antialiased or not, on masks |
//! | `sam2_base.rs` | `sam2_base.py` (the model root) |
//! | `transforms.rs` | `utils/misc.py` / `utils/transforms.py` (preprocessing) |
//! | `video_predictor.rs` | `sam2_video_predictor.py` (prompts, propagation, one bank per object) |
//! | `weights.rs` | `build_sam.py`'s `_load_checkpoint` |
//! | `adapter.rs` | memseg: LW-Adapter, PEG and prompt-free head (issue 7, `docs/adapters.md`) |

pub mod adapter;
pub mod config;
pub mod hiera;
pub mod image_encoder;
pub mod interpolate;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_bank;
pub mod memory_encoder;
pub mod position_encoding;
pub mod prompt_encoder;
pub mod sam2_base;
pub mod sam2_utils;
pub mod transformer;
pub mod transforms;
pub mod video_predictor;
pub mod weights;

pub use config::Sam2Config;
pub use sam2_base::Sam2Base;
