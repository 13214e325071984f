//! memseg: SAM2 segmentation of medical images on the user's own device.
//!
//! The same core runs natively (the `memseg` CLI) and in the browser (compiled to WebAssembly and driven by
//! `www/worker.js`). `ARCHITECTURE.md` follows a dropped file to the exported labels, file by file. Module map:
//! - [`backend`]: the one place where the compute device (wgpu or the Flex CPU backend) is chosen.
//! - [`sam2`]: the SAM2 / SAM2.1 port (one file per component of Meta's `sam2/modeling`).
//! - [`imaging`]: DICOM series, NIfTI volumes and PNG / JPEG / TIFF stacks read from bytes; intensity mappings;
//!   masks and label volumes checked against their image.
//! - [`session`]: the few-shot engine: supports and drawn masks -> masks for every slice (memory bank).
//! - [`prompt_free`]: a SAM2 model with a trained LW-Adapter folded in: label maps with no prompt.
//! - [`job`]: one volume job, the driver every front-end calls: a volume and a method in; label maps, the
//!   report and per-step events out.
//! - [`report`]: the run's report (areas, volumes, Dice).
//! - `files` (native): paths in, files out around the job; `segment`, `eval`, `progress` (native): the
//!   `memseg segment` and `memseg eval` commands.
//! - `train` (native): `memseg train`, the prompt-free adapters (`sam2::adapter`, `docs/adapters.md`).
//! - `convert` (native): `memseg convert` / `memseg info`, compact weights files (the format: `sam2::weights`).
//! - `bench` (native): `memseg bench`, timings next to Meta's PyTorch code.
//! - [`selftest`]: a small fixed computation (conv + GELU + matmul) used to check a device end to end.
//! - `web` (wasm only): the JavaScript bindings, a thin layer over [`job`] and the modules above.

pub mod backend;
pub mod imaging;
pub mod job;
pub mod prompt_free;
pub mod report;
pub mod sam2;
pub mod selftest;
pub mod session;

#[cfg(not(target_family = "wasm"))]
pub mod bench;
#[cfg(not(target_family = "wasm"))]
pub mod convert;
#[cfg(not(target_family = "wasm"))]
pub mod eval;
#[cfg(not(target_family = "wasm"))]
pub mod files;
#[cfg(not(target_family = "wasm"))]
pub mod progress;
#[cfg(not(target_family = "wasm"))]
pub mod segment;
#[cfg(not(target_family = "wasm"))]
pub mod train;

#[cfg(target_family = "wasm")]
pub mod web;
