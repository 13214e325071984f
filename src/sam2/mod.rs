//! The SAM2 / SAM2.1 port. One file per component of Meta's `sam2/modeling/` package, named after it:
//!
//! | file | Meta's module |
//! |---|---|
//! | `config.rs` | `configs/sam2.1/*.yaml` |
//! | `hiera.rs` | `backbones/hieradet.py` (+ `backbones/utils.py`) |
//! | `image_encoder.rs` | `backbones/image_encoder.py` (FPN neck, scalp) |
//! | `position_encoding.rs` | `position_encoding.py` |
//! | `sam2_utils.rs` | `sam2_utils.py` |
//! | `mask_decoder.rs` | `sam/mask_decoder.py` |
//! | `sam2_base.rs` | `sam2_base.py` (the model root) |
//! | `transforms.rs` | `utils/misc.py` / `utils/transforms.py` (preprocessing) |
//! | `weights.rs` | `build_sam.py`'s `_load_checkpoint` |

pub mod config;
pub mod hiera;
pub mod image_encoder;
pub mod mask_decoder;
pub mod position_encoding;
pub mod sam2_base;
pub mod sam2_utils;
pub mod transforms;
pub mod weights;

pub use config::Sam2Config;
pub use sam2_base::Sam2Base;
