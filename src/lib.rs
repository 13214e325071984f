//! memseg: SAM2 segmentation of medical images on the user's own device.
//!
//! The same core runs natively (the `memseg` CLI) and in the browser (compiled to WebAssembly and driven by
//! `www/worker.js`). Module map:
//! - [`backend`]: the one place where the compute device (wgpu or the Flex CPU backend) is chosen.
//! - [`sam2`]: the SAM2 / SAM2.1 port (one file per component of Meta's `sam2/modeling`).
//! - [`imaging`]: DICOM series, NIfTI volumes and PNG / JPEG / TIFF stacks read from bytes; intensity windows to RGB.
//! - [`session`]: the few-shot engine: supports and drawn masks -> masks for every slice (memory bank).
//! - [`report`]: the run's report (areas, volumes, Dice), shared by `memseg segment` and the browser.
//! - `segment`, `eval`, `progress` (native): `memseg segment` / `memseg eval`, files in and out around the session.
//! - `train` (native): `memseg train`, the prompt-free adapters (`sam2::adapter`, `docs/adapters.md`);
//!   [`adapter_segment`]: prompt-free inference, shared by `memseg segment --adapter` and the browser.
//! - `convert` (native): `memseg convert` / `memseg info`, compact weights files (the format: `sam2::weights`).
//! - [`selftest`]: a small fixed computation (conv + GELU + matmul) used to check a device end to end.
//! - `web` (wasm only): the JavaScript bindings, a thin layer over the modules above.

pub mod backend;
#[cfg(not(target_family = "wasm"))]
pub mod bench;
#[cfg(not(target_family = "wasm"))]
pub mod convert;
pub mod imaging;
pub mod sam2;
#[cfg(not(target_family = "wasm"))]
pub mod eval;
#[cfg(not(target_family = "wasm"))]
pub mod progress;
pub mod report;
#[cfg(not(target_family = "wasm"))]
pub mod segment;
pub mod session;
/// The teaching view's data: each step's memory bank and attention, per class.
pub mod teaching;
#[cfg(not(target_family = "wasm"))]
pub mod train;
pub mod adapter_segment;
pub mod selftest;

#[cfg(target_family = "wasm")]
pub mod web;
