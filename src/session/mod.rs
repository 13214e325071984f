//! The few-shot engine the browser and the CLI share: a few labelled slices (supports) turn into masks for
//! every slice of a query volume through SAM2's memory bank, as the seed papers do it.
//!
//! Two ways to run ([`Mode`]):
//! - [`Mode::SupportsOnly`] (FS-MedSAM2's 1S1Q / kS1Q): each query slice is segmented from the supports alone,
//!   as if it followed them in a fresh video `[support_1, ..., support_k, query]`. The supports' memories are
//!   encoded once and reused for every query (they do not depend on the query), so the result equals a
//!   fresh video per query at a fraction of the cost.
//! - [`Mode::Propagate`] (S1SFQ / kSFQ): the supports are inserted into the query sequence (at the middle by
//!   default) and the volume is tracked slice to slice with Meta's `propagate_in_video` order, forward from
//!   the first conditioning frame to the end, then in reverse from that frame to the start. Masks drawn on
//!   query slices themselves are conditioning frames too (then no support needs inserting).
//!
//! Several classes run at once, each its own SAM2 object with its own memory bank, sharing each slice's image
//! features: a slice is encoded once per run whatever the number of classes ([`Run::frames_encoded`]).
//!
//! A run is a stepper ([`Run::step`], async so the browser can await GPU reads between slices); every step
//! yields one query slice's low-resolution logits per class. Nothing here reads files: callers bring 8-bit
//! RGB slices (see `imaging::intensity`) and label maps.
//!
//! Files: this one holds the public types ([`Session`], [`Mode`], [`MemoryOptions`], [`SliceOutput`], [`Run`]);
//! `supports_only.rs` and `propagate.rs` the two runs; `sgp.rs` SAM2-SGP's support selection and eviction rule;
//! [`bank_snapshot`] what each step's memory bank held (the page's teaching view reads it).

use std::rc::Rc;

use burn::tensor::{Device, Tensor, TensorData};
use image::{GrayImage, RgbImage};
use serde::Serialize;

use crate::sam2::Sam2Base;
use crate::sam2::{interpolate, transforms};

pub mod bank_snapshot;
mod correct;
pub mod feature_cache;
mod propagate;
mod sgp;
pub mod slice_prompt;
mod supports_only;

use bank_snapshot::StepBank;
pub use correct::Correctable;
use feature_cache::SharedFeatureCache;
use propagate::PropagateRun;
use supports_only::SupportsOnlyRun;

/// Longest query sequence a run accepts: beyond it the outputs alone (low-resolution logits per class and
/// slice) would crowd the browser's 4 GiB address space.
pub const MAX_SLICES: usize = 2048;

/// A labelled slice: an 8-bit RGB image and a label map of the same size (0 = background, c = class c).
#[derive(Clone)]
pub struct Support {
    pub name: String,
    pub image: RgbImage,
    pub labels: GrayImage,
}

/// Where the supports go in the query sequence ([`Mode::Propagate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Before query slice `n / 2` (FS-MedSAM2's S1SFQ "from the middle").
    Middle,
    /// Before query slice `i`.
    Index(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// 1S1Q / kS1Q: each query from the supports alone.
    SupportsOnly,
    /// S1SFQ / kSFQ: supports placed in the sequence, then slice-to-slice propagation both ways.
    Propagate(Placement),
}

/// What the memory bank keeps and attends to. The default is SAM2's: every conditioning frame (support or
/// drawn mask) plus the 6 most recent tracked slices and 16 object pointers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryOptions {
    /// At most this many conditioning frames in each slice's memory attention: the temporally closest
    /// (Meta's `max_cond_frames_in_attn`). With [`Mode::SupportsOnly`] and `select_supports`, the most
    /// similar supports sit closest to the query, so the cap keeps the most similar ones.
    pub max_conditioning: Option<usize>,
    /// SAM2-SGP's support selection: use only the `k` supports whose stride-16 image features are most
    /// cosine-similar to the query slice (per class, among the supports that hold the class). SGP samples
    /// `k` from the softmax of the similarities; we take the `k` most likely, so runs are reproducible. In
    /// [`Mode::Propagate`] the similarity is to the query slice where the supports are inserted.
    pub select_supports: Option<usize>,
    /// SAM2-SGP's similarity-based eviction ([`Mode::Propagate`] only): instead of the last 6 slices, the bank
    /// keeps 6 tracked memories chosen for diversity and quality. When it is full, a new memory replaces the
    /// stored one most similar to the stored memory least similar to the new one, if that pair is more
    /// alike than the new memory and that one, and the new mask's predicted IoU is above the replaced one's
    /// minus 0.1; otherwise the new memory is not kept. Similarity is the cosine of the memory features.
    /// Each pass (forward, reverse) starts from the conditioning memories alone.
    pub similarity_eviction: bool,
}

/// One query slice's result: low-resolution mask logits per class `[1, 1, S/4, S/4]`, on the device.
pub struct SliceOutput {
    pub slice: usize,
    /// True when the slice was reached by the reverse pass (Propagate) .
    pub reverse: bool,
    pub logits: Vec<Tensor<4>>,
    /// Supports each class used (SupportsOnly; empty in Propagate, where all inserted supports serve).
    pub supports_used: Vec<Vec<usize>>,
    /// What each class's memory bank held and what the model attended to for this slice (the teaching view).
    pub bank: StepBank,
}

impl SliceOutput {
    /// The logits of every class at a frame's size `[1, classes, h, w]` (bilinear, as Meta's
    /// `_get_orig_video_res_output`); > 0 is the object.
    pub fn at_size(&self, height: usize, width: usize) -> Tensor<4> {
        interpolate::bilinear(Tensor::cat(self.logits.clone(), 1), [height, width], false)
    }
}

/// A session: supports, the query slices, and the classes to segment.
pub struct Session {
    /// Label values to segment, each its own object (index in this list = object id).
    pub classes: Vec<u8>,
    pub(super) supports: Vec<Support>,
    pub(super) query: Rc<Vec<RgbImage>>,
    /// Masks drawn on query slices: (slice, label map).
    pub(super) query_masks: Vec<(usize, GrayImage)>,
    /// Clicks and boxes on query slices, one per slice and class ([`slice_prompt`]).
    pub(super) query_prompts: Vec<slice_prompt::SlicePrompt>,
    /// Encoder features kept from earlier runs of the same model ([`feature_cache`]).
    pub(super) features: Option<SharedFeatureCache>,
    /// A propagation keeps every tracked memory (for corrections after it; see [`Session::keep_memories`]).
    pub(super) keep_memories: bool,
}

impl Session {
    /// A session over `query` slices (8-bit RGB, all the same size) segmenting `classes` (label values > 0).
    pub fn new(query: Vec<RgbImage>, classes: Vec<u8>) -> Result<Self, String> {
        if query.is_empty() {
            return Err("the query has no slice".into());
        }
        if query.len() > MAX_SLICES {
            return Err(format!("the query has {} slices; at most {MAX_SLICES} are supported", query.len()));
        }
        if classes.is_empty() || classes.contains(&0) {
            return Err("give one or more classes (label values 1..=255)".into());
        }
        Ok(Self { classes, supports: Vec::new(), query: Rc::new(query), query_masks: Vec::new(), query_prompts: Vec::new(), features: None, keep_memories: false })
    }

    pub fn num_slices(&self) -> usize {
        self.query.len()
    }

    /// A propagation keeps every tracked memory instead of releasing those no later slice reads, so that
    /// corrections can follow the run (the page): about `mem_dim x (S/16)^2` bf16-rounded floats plus
    /// the `(S/4)^2` logits per slice and class (0.33 MB at 512, 1.3 MB at 1024). Runs with corrections given
    /// up front keep them anyway.
    pub fn keep_memories(&mut self, keep: bool) {
        self.keep_memories = keep;
    }

    pub fn keeps_memories(&self) -> bool {
        self.keep_memories
    }

    /// Takes encoder features from `cache` and keeps new ones there (the page's re-runs).
    pub fn use_feature_cache(&mut self, cache: SharedFeatureCache) {
        self.features = Some(cache);
    }

    /// A support from anywhere (this volume, another volume or patient). Its label map must match its
    /// image's size and hold at least one of the session's classes.
    pub fn add_support(&mut self, support: Support) -> Result<(), String> {
        check_labels(&support.name, &support.image, &support.labels, &self.classes)?;
        self.supports.push(support);
        Ok(())
    }

    /// Query slice `slice`, or an error naming `name` (the mask meant for it).
    fn query_slice(&self, slice: usize, name: &str) -> Result<&RgbImage, String> {
        self.query.get(slice).ok_or_else(|| format!("{name}: slice {slice} is out of range ({} slices)", self.query.len()))
    }

    /// A label map drawn on query slice `slice`, used as a support (inserted into the sequence, or alone in
    /// [`Mode::SupportsOnly`]) rather than as a conditioning frame on its own slice: the page's modes that take
    /// the painted slices as supports.
    pub fn add_slice_as_support(&mut self, slice: usize, name: &str, labels: GrayImage) -> Result<(), String> {
        let image = self.query_slice(slice, name)?.clone();
        self.add_support(Support { name: name.to_string(), image, labels })
    }

    /// A label map drawn on query slice `slice`: that slice becomes a conditioning frame ([`Mode::Propagate`]).
    pub fn add_query_mask(&mut self, slice: usize, name: &str, labels: GrayImage) -> Result<(), String> {
        let image = self.query_slice(slice, name)?;
        check_labels(name, image, &labels, &self.classes)?;
        self.query_masks.retain(|(s, _)| *s != slice);
        self.query_masks.push((slice, labels));
        Ok(())
    }

    /// Starts a run. Errors when a class has no mask anywhere, or the mode does not fit the prompts.
    pub async fn start<'m>(&self, model: &'m Sam2Base, mode: Mode, memory: MemoryOptions) -> Result<Run<'m>, String> {
        for (object, &class) in self.classes.iter().enumerate() {
            if !self.class_is_given(class) {
                return Err(format!("class {class} (object {object}) has no pixel in any support or drawn mask, and no click or box before the first run (a correction needs a mask to correct)"));
            }
        }
        if let Some(cache) = &self.features {
            cache.borrow_mut().begin_run();
        }
        match mode {
            Mode::SupportsOnly => {
                if !self.query_masks.is_empty() {
                    return Err("masks drawn on query slices need the propagate mode".into());
                }
                if !self.query_prompts.is_empty() {
                    return Err("clicks and boxes on query slices need the propagate mode".into());
                }
                if memory.similarity_eviction {
                    return Err("similarity eviction applies to tracked memories: use it with the propagate mode".into());
                }
                SupportsOnlyRun::new(self, model, memory).map(|r| Run { inner: RunKind::SupportsOnly(Box::new(r)) })
            }
            Mode::Propagate(at) => PropagateRun::new(self, model, at, memory).await.map(|r| Run { inner: RunKind::Propagate(Box::new(r)) }),
        }
    }
}

pub(super) fn has_class(labels: &GrayImage, class: u8) -> bool {
    labels.pixels().any(|p| p[0] == class)
}

pub(super) fn check_labels(name: &str, image: &RgbImage, labels: &GrayImage, classes: &[u8]) -> Result<(), String> {
    if image.dimensions() != labels.dimensions() {
        let (w, h) = labels.dimensions();
        let (iw, ih) = image.dimensions();
        return Err(format!("{name}: the mask is {w}x{h} but its image is {iw}x{ih}"));
    }
    if !classes.iter().any(|&c| has_class(labels, c)) {
        return Err(format!("{name}: the mask holds none of the classes {classes:?} (is it empty?)"));
    }
    Ok(())
}

/// A 0/1 mask `[1, 1, H, W]` of one class.
pub(super) fn class_mask(labels: &GrayImage, class: u8, device: &Device) -> Tensor<4> {
    let (w, h) = labels.dimensions();
    let values: Vec<f32> = labels.pixels().map(|p| f32::from(p[0] == class)).collect();
    Tensor::from_data(TensorData::new(values, [1, 1, h as usize, w as usize]), device)
}

/// A running segmentation; call [`step`](Run::step) until it returns `None`.
pub struct Run<'m> {
    inner: RunKind<'m>,
}

enum RunKind<'m> {
    SupportsOnly(Box<SupportsOnlyRun<'m>>),
    Propagate(Box<PropagateRun>),
}

impl Run<'_> {
    /// The next query slice's output, or `None` when every slice is done.
    pub async fn step(&mut self) -> Option<Result<SliceOutput, String>> {
        match &mut self.inner {
            RunKind::SupportsOnly(r) => r.step().await,
            RunKind::Propagate(r) => r.step().await,
        }
    }

    /// Steps in all (for progress bars); a slice may be visited twice in Propagate (a drawn slice is
    /// returned again by the reverse pass), in which case the later output is the final one.
    pub fn total_steps(&self) -> usize {
        match &self.inner {
            RunKind::SupportsOnly(r) => r.query.len(),
            RunKind::Propagate(r) => r.steps_in_stretch(),
        }
    }

    /// Image-encoder runs so far.
    pub fn frames_encoded(&self) -> usize {
        match &self.inner {
            RunKind::SupportsOnly(r) => r.frames_encoded,
            RunKind::Propagate(r) => r.extra_encoded + r.predictor.frames_encoded(),
        }
    }
}

/// An 8-bit RGB slice as the model's input `[1, 3, S, S]` on its device.
pub fn preprocess(model: &Sam2Base, image: &RgbImage) -> Tensor<4> {
    transforms::preprocess_rgb8(image, model.image_size(), &model.device())
}

/// Reads a tensor's values; awaits the device (the only way to read on WebGPU).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data_async().await.map_err(|e| format!("reading a result from the device failed: {e:?}"))?.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}

/// The label map of one slice from its classes' logits at the slice's size (`[classes][h*w]`): each pixel
/// takes the class with the highest positive logit, background (0) where none is positive.
pub fn label_map(logits: &[Vec<f32>], classes: &[u8]) -> Vec<u8> {
    let n = logits.first().map_or(0, Vec::len);
    (0..n)
        .map(|p| {
            let mut best = (0.0f32, 0u8);
            for (c, l) in logits.iter().enumerate() {
                if l[p] > best.0 {
                    best = (l[p], classes[c]);
                }
            }
            best.1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_map_takes_the_highest_positive_logit() {
        let logits = vec![vec![1.0, -1.0, 3.0, -2.0], vec![2.0, -0.5, 1.0, -1.0]];
        assert_eq!(label_map(&logits, &[4, 7]), vec![7, 0, 4, 0]);
    }
}
