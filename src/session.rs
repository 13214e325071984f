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

use std::rc::Rc;

use burn::tensor::{Device, Tensor, TensorData};
use image::{GrayImage, RgbImage};
use serde::Serialize;

use crate::sam2::memory_bank::{MemoryBank, MemoryEntry, RecentMemories};
use crate::sam2::sam2_base::{ImageFeatures, Sam2Base};
use crate::sam2::video_predictor::{FrameOutput, FrameSource, VideoPredictor, mask_to_model_size};
use crate::sam2::{interpolate, transforms};
use crate::teaching::{Admission, ObjectBank, Outcome, Place, PoolMember, StepBank, SupportScore, rank_supports};

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
    supports: Vec<Support>,
    query: Rc<Vec<RgbImage>>,
    /// Masks drawn on query slices: (slice, label map).
    query_masks: Vec<(usize, GrayImage)>,
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
        Ok(Self { classes, supports: Vec::new(), query: Rc::new(query), query_masks: Vec::new() })
    }

    pub fn num_slices(&self) -> usize {
        self.query.len()
    }

    /// A support from anywhere (this volume, another volume or patient). Its label map must match its
    /// image's size and hold at least one of the session's classes.
    pub fn add_support(&mut self, support: Support) -> Result<(), String> {
        check_labels(&support.name, &support.image, &support.labels, &self.classes)?;
        self.supports.push(support);
        Ok(())
    }

    /// A label map drawn on query slice `slice`: that slice becomes a conditioning frame ([`Mode::Propagate`]).
    pub fn add_query_mask(&mut self, slice: usize, name: &str, labels: GrayImage) -> Result<(), String> {
        let image = self.query.get(slice).ok_or_else(|| format!("{name}: slice {slice} is out of range ({} slices)", self.query.len()))?;
        check_labels(name, image, &labels, &self.classes)?;
        self.query_masks.retain(|(s, _)| *s != slice);
        self.query_masks.push((slice, labels));
        Ok(())
    }

    /// Starts a run. Errors when a class has no mask anywhere, or the mode does not fit the prompts.
    pub async fn start<'m>(&self, model: &'m Sam2Base, mode: Mode, memory: MemoryOptions) -> Result<Run<'m>, String> {
        for (object, &class) in self.classes.iter().enumerate() {
            let in_supports = self.supports.iter().any(|s| has_class(&s.labels, class));
            let in_query = self.query_masks.iter().any(|(_, l)| has_class(l, class));
            if !in_supports && !in_query {
                return Err(format!("class {class} (object {object}) has no pixel in any support or drawn mask"));
            }
        }
        match mode {
            Mode::SupportsOnly => {
                if !self.query_masks.is_empty() {
                    return Err("masks drawn on query slices need the propagate mode".into());
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

fn has_class(labels: &GrayImage, class: u8) -> bool {
    labels.pixels().any(|p| p[0] == class)
}

fn check_labels(name: &str, image: &RgbImage, labels: &GrayImage, classes: &[u8]) -> Result<(), String> {
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
fn class_mask(labels: &GrayImage, class: u8, device: &Device) -> Tensor<4> {
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
    Propagate(Box<PropagateRun<'m>>),
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
            RunKind::Propagate(r) => r.order.len(),
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

fn preprocess(model: &Sam2Base, image: &RgbImage) -> Tensor<4> {
    transforms::preprocess_rgb8(image, model.image_size(), &model.device())
}

/// The SGP similarity vector of a slice: its stride-16 features, flattened and L2-normalised, read to the CPU.
async fn similarity_vector(features: &ImageFeatures) -> Result<Vec<f32>, String> {
    let top = features.backbone_fpn.last().expect("three FPN levels").clone();
    let mut v = read_f32(top.flatten::<1>(0, 3)).await?;
    normalize(&mut v);
    Ok(v)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The `k` candidates most similar to `query`, least similar first (so the most similar ends closest to
/// the query in time, and a conditioning cap keeps it).
#[cfg(test)]
fn most_similar(candidates: &[usize], vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    chosen_supports(&scored_supports(candidates, vectors, query, k))
}

/// Every candidate's cosine score and rank, the `k` most similar marked chosen (what the teaching view shows).
fn scored_supports(candidates: &[usize], vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<SupportScore> {
    rank_supports(candidates, |i| cosine(&vectors[i], query), k)
}

/// The chosen supports, least similar first.
fn chosen_supports(scores: &[SupportScore]) -> Vec<usize> {
    scores.iter().filter(|s| s.chosen).rev().map(|s| s.support).collect()
}

/// Reads a tensor's values; awaits the device (the only way to read on WebGPU).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data_async().await.map_err(|e| format!("reading a result from the device failed: {e:?}"))?.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}

/// 1S1Q / kS1Q: supports encoded once into conditioning memories, every query tracked against them alone.
struct SupportsOnlyRun<'m> {
    model: &'m Sam2Base,
    query: Rc<Vec<RgbImage>>,
    /// `[support][object]`: the support's conditioning memory for that class, if it holds the class.
    entries: Vec<Vec<Option<MemoryEntry>>>,
    /// The supports' similarity vectors, computed when `select_supports` is set.
    vectors: Option<Vec<Vec<f32>>>,
    memory: MemoryOptions,
    next: usize,
    frames_encoded: usize,
    /// Supports not yet encoded (done on the first step, so that `start` stays synchronous).
    pending_supports: Vec<Support>,
    classes: Vec<u8>,
}

impl<'m> SupportsOnlyRun<'m> {
    fn new(session: &Session, model: &'m Sam2Base, memory: MemoryOptions) -> Result<Self, String> {
        if session.supports.is_empty() {
            return Err("the supports-only mode needs at least one support".into());
        }
        Ok(Self {
            model,
            query: session.query.clone(),
            entries: Vec::new(),
            vectors: None,
            memory,
            next: 0,
            frames_encoded: 0,
            pending_supports: session.supports.clone(),
            classes: session.classes.clone(),
        })
    }

    /// Each support's conditioning memory per class: `add_new_mask` and the preflight of a fresh video.
    async fn encode_supports(&mut self) -> Result<(), String> {
        let device = self.model.device();
        let mut vectors = Vec::new();
        for support in std::mem::take(&mut self.pending_supports) {
            let features = self.model.forward_image(preprocess(self.model, &support.image));
            self.frames_encoded += 1;
            if self.memory.select_supports.is_some() {
                vectors.push(similarity_vector(&features).await?);
            }
            let per_class = self
                .classes
                .iter()
                .map(|&class| {
                    has_class(&support.labels, class).then(|| {
                        let mask = mask_to_model_size(class_mask(&support.labels, class, &device), self.model.image_size());
                        conditioning_memory(self.model, &features, mask)
                    })
                })
                .collect();
            self.entries.push(per_class);
        }
        if self.memory.select_supports.is_some() {
            self.vectors = Some(vectors);
        }
        Ok(())
    }

    async fn step(&mut self) -> Option<Result<SliceOutput, String>> {
        if !self.pending_supports.is_empty() {
            if let Err(e) = self.encode_supports().await {
                return Some(Err(e));
            }
        }
        let slice = self.next;
        let image = self.query.get(slice)?;
        self.next += 1;
        Some(self.segment(slice, image.clone()).await)
    }

    async fn segment(&mut self, slice: usize, image: RgbImage) -> Result<SliceOutput, String> {
        let features = self.model.forward_image(preprocess(self.model, &image));
        self.frames_encoded += 1;
        let query_vector = match &self.vectors {
            Some(_) => Some(similarity_vector(&features).await?),
            None => None,
        };
        let mut logits = Vec::new();
        let mut supports_used = Vec::new();
        let cfg = self.model.tracking_config();
        let mut bank_view = StepBank { num_maskmem: cfg.num_maskmem, objects: Vec::new() };
        for object in 0..self.classes.len() {
            let holders: Vec<usize> = (0..self.entries.len()).filter(|&s| self.entries[s][object].is_some()).collect();
            let scores = match (&self.vectors, &query_vector, self.memory.select_supports) {
                (Some(vectors), Some(q), Some(k)) => scored_supports(&holders, vectors, q, k),
                _ => Vec::new(),
            };
            let chosen = if scores.is_empty() { holders } else { chosen_supports(&scores) };
            // The fresh video `[chosen supports..., query]`: supports at 0..k, the query at k.
            let mut bank = MemoryBank::new();
            bank.set_max_conditioning(self.memory.max_conditioning);
            for (position, &s) in chosen.iter().enumerate() {
                bank.insert_conditioning(position, self.entries[s][object].clone().expect("holders only"));
            }
            let k = chosen.len();
            // The selection `track_step` makes from this bank (the query at k in a video of k + 1 frames).
            let selection = bank.select(k, false, k + 1, cfg);
            let place = |f: usize| chosen.get(f).map_or(Place::Slice(slice), |&s| Place::Support(s));
            let mut view = ObjectBank::new(&bank.entries(), Some(&selection), cfg, place);
            view.supports = scores;
            bank_view.objects.push(view);
            let out = self.model.track_step(k, false, &features, None, None, &bank, k + 1, false, false, None);
            logits.push(out.sam.low_res_masks);
            supports_used.push(chosen);
        }
        Ok(SliceOutput { slice, reverse: false, logits, supports_used, bank: bank_view })
    }
}

/// A conditioning frame's memory from a mask at the model's size: Meta's `add_new_mask` (the mask used as the
/// output) then the preflight's memory encoding.
fn conditioning_memory(model: &Sam2Base, features: &ImageFeatures, mask: Tensor<4>) -> MemoryEntry {
    let mut out = model.track_step(0, true, features, None, Some(mask), &MemoryBank::new(), 1, false, false, None);
    out.maskmem_features = Some(model.encode_conditioning_memory(features, &out.sam));
    out.memory_entry().expect("memory encoded above")
}

/// The query sequence with the supports inserted: each sequence frame is a query slice or a support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqFrame {
    Query(usize),
    Support(usize),
}

struct SequenceFrames {
    query: Rc<Vec<RgbImage>>,
    supports: Rc<Vec<Support>>,
    sequence: Vec<SeqFrame>,
    size: usize,
    device: Device,
}

impl FrameSource for SequenceFrames {
    fn num_frames(&self) -> usize {
        self.sequence.len()
    }

    fn frame(&self, index: usize) -> Result<Tensor<4>, String> {
        let image = match self.sequence.get(index) {
            Some(SeqFrame::Query(i)) => &self.query[*i],
            Some(SeqFrame::Support(i)) => &self.supports[*i].image,
            None => return Err(format!("frame {index} is out of range")),
        };
        Ok(transforms::preprocess_rgb8(image, self.size, &self.device))
    }
}

/// S1SFQ / kSFQ (and masks drawn on query slices): Meta's video predictor over the query sequence.
struct PropagateRun<'m> {
    predictor: VideoPredictor<'m>,
    sequence: Vec<SeqFrame>,
    /// (sequence frame, reverse) in the order Meta's `propagate_in_video` visits them (forward, then reverse).
    order: Vec<(usize, bool)>,
    next: usize,
    /// The first conditioning frame: the reverse pass needs the forward pass's memories after it.
    start: usize,
    /// How far back (in the direction of travel) a frame's memory can still be selected.
    reach: usize,
    /// Supports encoded to choose them by similarity (outside the predictor).
    extra_encoded: usize,
    /// SAM2-SGP's eviction: per object, the kept tracked memories (frame, unit feature vector, IoU).
    eviction: Option<Vec<Vec<Kept>>>,
    /// The session's index of each inserted support (`SeqFrame::Support(i)` is support `support_ids[i]`).
    support_ids: Vec<usize>,
    /// SGP's support selection, as scored (empty without `select_supports`).
    support_scores: Vec<SupportScore>,
}

/// Supports chosen for a propagation: the supports, their session indices, SGP's scores, encoder runs spent.
struct ChosenSupports {
    supports: Vec<Support>,
    ids: Vec<usize>,
    scores: Vec<SupportScore>,
    encoded: usize,
}

/// A sequence frame as the user knows it.
fn place_of(sequence: &[SeqFrame], support_ids: &[usize], frame: usize) -> Place {
    match sequence[frame] {
        SeqFrame::Query(i) => Place::Slice(i),
        SeqFrame::Support(i) => Place::Support(support_ids[i]),
    }
}

/// A tracked memory kept by the similarity eviction.
struct Kept {
    frame: usize,
    vector: Vec<f32>,
    iou: f32,
}

impl<'m> PropagateRun<'m> {
    async fn new(session: &Session, model: &'m Sam2Base, at: Placement, memory: MemoryOptions) -> Result<Self, String> {
        let n = session.query.len();
        let at = match at {
            Placement::Middle => n / 2,
            Placement::Index(i) if i <= n => i,
            Placement::Index(i) => return Err(format!("supports cannot be placed at slice {i}: the query has {n} slices")),
        };
        if session.supports.is_empty() && session.query_masks.is_empty() {
            return Err("give a support or a mask drawn on a query slice".into());
        }
        let ChosenSupports { supports, ids: support_ids, scores: support_scores, encoded: extra_encoded } =
            Self::choose_supports(session, model, at, memory).await?;
        let mut sequence: Vec<SeqFrame> = (0..at).map(SeqFrame::Query).collect();
        sequence.extend((0..supports.len()).map(SeqFrame::Support));
        sequence.extend((at..n).map(SeqFrame::Query));
        let frames = SequenceFrames {
            query: session.query.clone(),
            supports: Rc::new(supports.clone()),
            sequence: sequence.clone(),
            size: model.image_size(),
            device: model.device(),
        };
        let mut predictor = VideoPredictor::new(model, Box::new(frames));
        let recent = if memory.similarity_eviction { RecentMemories::Kept } else { RecentMemories::Neighbours };
        predictor.set_bank_policy(memory.max_conditioning, recent);
        let device = model.device();
        // Prompts frame by frame, every class of a frame together (one encoding per frame).
        let mut prompts: Vec<(usize, &GrayImage)> = supports.iter().enumerate().map(|(i, s)| (at + i, &s.labels)).collect();
        prompts.extend(session.query_masks.iter().map(|(slice, labels)| (if *slice < at { *slice } else { slice + supports.len() }, labels)));
        prompts.sort_by_key(|(frame, _)| *frame);
        for (frame, labels) in prompts {
            for (object, &class) in session.classes.iter().enumerate() {
                if has_class(labels, class) {
                    predictor.add_new_mask(frame, object, class_mask(labels, class, &device))?;
                }
            }
        }
        let forward = predictor.begin_propagation(None, None, false)?;
        let start = predictor.first_conditioning_frame().expect("prompts added");
        let mut order: Vec<(usize, bool)> = forward.into_iter().map(|f| (f, false)).collect();
        // Meta's reverse pass starts at the same (earliest) conditioning frame; it re-yields that frame.
        order.extend((0..=start).rev().filter(|_| start > 0).map(|f| (f, true)));
        let cfg = model.tracking_config();
        let reach = cfg.num_maskmem * cfg.memory_temporal_stride_for_eval.max(1) + cfg.max_obj_ptrs_in_encoder;
        let eviction = memory.similarity_eviction.then(|| (0..session.classes.len()).map(|_| Vec::new()).collect());
        Ok(Self { predictor, sequence, order, next: 0, start, reach, extra_encoded, eviction, support_ids, support_scores })
    }

    /// All supports, or (SGP) the `k` most similar to the query slice where they are inserted.
    async fn choose_supports(session: &Session, model: &Sam2Base, at: usize, memory: MemoryOptions) -> Result<ChosenSupports, String> {
        let all: Vec<usize> = (0..session.supports.len()).collect();
        let Some(k) = memory.select_supports.filter(|&k| k < session.supports.len()) else {
            return Ok(ChosenSupports { supports: session.supports.clone(), ids: all, scores: Vec::new(), encoded: 0 });
        };
        let anchor = &session.query[at.min(session.query.len() - 1)];
        let q = similarity_vector(&model.forward_image(preprocess(model, anchor))).await?;
        let mut vectors = Vec::new();
        for support in &session.supports {
            vectors.push(similarity_vector(&model.forward_image(preprocess(model, &support.image))).await?);
        }
        let scores = scored_supports(&all, &vectors, &q, k);
        let ids = chosen_supports(&scores);
        let supports = ids.iter().map(|&i| session.supports[i].clone()).collect();
        Ok(ChosenSupports { supports, ids, scores, encoded: session.supports.len() + 1 })
    }

    async fn step(&mut self) -> Option<Result<SliceOutput, String>> {
        loop {
            let &(frame, reverse) = self.order.get(self.next)?;
            let pass_starts = self.next > 0 && reverse && !self.order[self.next - 1].1;
            self.next += 1;
            if pass_starts && self.eviction.is_some() {
                self.eviction.iter_mut().flatten().for_each(Vec::clear);
                self.predictor.retain_tracked(|_, _| false);
            }
            let outputs = match self.predictor.track(frame, reverse) {
                Ok(o) => o,
                Err(e) => return Some(Err(e)),
            };
            // The eviction's decisions go to the teaching view; without it, nothing is decided (exact release).
            let admissions = if self.eviction.is_some() {
                match self.evict(&outputs).await {
                    Ok(a) => a,
                    Err(e) => return Some(Err(e)),
                }
            } else {
                self.release_memories(frame, reverse);
                Vec::new()
            };
            if let SeqFrame::Query(slice) = self.sequence[frame] {
                let bank = self.bank_view(&outputs, admissions);
                let logits = outputs.into_iter().map(|o| o.pred_masks).collect();
                return Some(Ok(SliceOutput { slice, reverse, logits, supports_used: Vec::new(), bank }));
            }
        }
    }

    /// Each class's bank at this step (the teaching view), from the core's own outputs and decisions.
    fn bank_view(&self, outputs: &[FrameOutput], mut admissions: Vec<Option<Admission>>) -> StepBank {
        let cfg = self.predictor.model().tracking_config();
        let place = |f: usize| place_of(&self.sequence, &self.support_ids, f);
        admissions.resize(outputs.len(), None);
        let objects = outputs
            .iter()
            .zip(admissions)
            .map(|(out, eviction)| {
                let mut view = ObjectBank::new(&out.held, out.selection.as_ref(), cfg, place);
                view.supports = self.support_scores.clone();
                view.eviction = eviction;
                view
            })
            .collect();
        StepBank { num_maskmem: cfg.num_maskmem, objects }
    }

    /// SAM2-SGP's similarity eviction after a tracked frame, per object (see [`MemoryOptions`]); returns the
    /// rule's decision per object (`None` for a conditioning frame).
    async fn evict(&mut self, outputs: &[FrameOutput]) -> Result<Vec<Option<Admission>>, String> {
        let capacity = self.predictor.model().tracking_config().num_maskmem.saturating_sub(1).max(1);
        let pools = self.eviction.as_mut().expect("eviction on");
        let (sequence, ids) = (&self.sequence, &self.support_ids);
        let mut decisions = Vec::new();
        for (object, out) in outputs.iter().enumerate() {
            let Some(features) = out.maskmem_features.clone().filter(|_| !out.conditioning) else {
                decisions.push(None);
                continue;
            };
            let mut vector = read_f32(features.flatten::<1>(0, 3)).await?;
            normalize(&mut vector);
            let iou = read_f32(out.iou_score.clone()).await?.first().copied().unwrap_or(0.0);
            let decision = admit(&mut pools[object], Kept { frame: out.frame, vector, iou }, capacity, |f| place_of(sequence, ids, f));
            decisions.push(Some(decision));
        }
        let keep: Vec<Vec<usize>> = pools.iter().map(|p| p.iter().map(|k| k.frame).collect()).collect();
        self.predictor.retain_tracked(|object, frame| keep.get(object).is_some_and(|k| k.contains(&frame)));
        Ok(decisions)
    }

    /// Drops tracked memories no later frame can select (at most `reach` frames behind in the direction of
    /// travel), keeping those the reverse pass will read (just after the start). Exact: the outputs are the
    /// same as with every memory kept, and a 100-slice volume holds a few dozen memories, not 100.
    fn release_memories(&mut self, frame: usize, reverse: bool) {
        let (reach, start) = (self.reach, self.start);
        if reverse {
            self.predictor.retain_tracked(|_, f| f < frame + reach);
        } else {
            self.predictor.retain_tracked(|_, f| f + reach > frame || (f > start && f <= start + reach));
        }
    }
}

/// SAM2-SGP's rule for a new memory and a pool of at most `capacity`; returns the decision with the numbers
/// it was made on (`place` names frames for the teaching view).
fn admit(pool: &mut Vec<Kept>, new: Kept, capacity: usize, place: impl Fn(usize) -> Place) -> Admission {
    let sim_new = |k: &Kept| cosine(&k.vector, &new.vector);
    let mut decision = Admission {
        new: place(new.frame),
        new_iou: new.iou,
        capacity,
        pool: pool.iter().map(|k| PoolMember { at: place(k.frame), iou: k.iou, similarity_to_new: sim_new(k) }).collect(),
        outcome: Outcome::Rejected,
        least_similar: None,
        closest_to_it: None,
    };
    if pool.len() < capacity {
        pool.push(new);
        decision.outcome = Outcome::Added;
        return decision;
    }
    let Some(i) = (0..pool.len()).min_by(|&a, &b| sim_new(&pool[a]).total_cmp(&sim_new(&pool[b]))) else { return decision };
    decision.least_similar = Some((place(pool[i].frame), sim_new(&pool[i])));
    let sim_i = |j: usize| cosine(&pool[i].vector, &pool[j].vector);
    let Some(j) = (0..pool.len()).filter(|&j| j != i).max_by(|&a, &b| sim_i(a).total_cmp(&sim_i(b))) else {
        return decision;
    };
    decision.closest_to_it = Some((place(pool[j].frame), sim_i(j)));
    if sim_new(&pool[i]) < sim_i(j) && new.iou > pool[j].iou - 0.1 {
        pool[j] = new;
        decision.outcome = Outcome::Replaced;
    }
    decision
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
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

    fn kept(frame: usize, vector: Vec<f32>, iou: f32) -> Kept {
        Kept { frame, vector, iou }
    }

    #[test]
    fn similarity_eviction_replaces_the_redundant_memory() {
        // 0 and 1 are alike, 2 is different; a new memory unlike 2 replaces 2's nearest (1 or 0).
        let mut pool = vec![kept(0, vec![1.0, 0.0], 0.9), kept(1, vec![0.99, 0.14], 0.9), kept(2, vec![0.0, 1.0], 0.9)];
        let d = admit(&mut pool, kept(3, vec![1.0, 0.0], 0.9), 3, Place::Slice);
        assert_eq!((d.outcome, d.least_similar, d.closest_to_it), (Outcome::Replaced, Some((Place::Slice(2), 0.0)), Some((Place::Slice(1), 0.14))));
        // Least similar to the new (1, 0) is 2; most similar to 2 is 1; sim(new, 2) = 0 < sim(2, 1) = 0.14.
        assert_eq!(pool.iter().map(|k| k.frame).collect::<Vec<_>>(), vec![0, 3, 2]);
        // A new memory whose predicted IoU is more than 0.1 below the one it would replace is not kept.
        let mut pool = vec![kept(0, vec![1.0, 0.0], 0.9), kept(1, vec![0.6, 0.8], 0.9), kept(2, vec![0.0, 1.0], 0.9)];
        let d = admit(&mut pool, kept(3, vec![1.0, 0.0], 0.75), 3, Place::Slice);
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(pool.iter().map(|k| k.frame).collect::<Vec<_>>(), vec![0, 1, 2]);
        admit(&mut pool, kept(4, vec![1.0, 0.0], 0.85), 3, Place::Slice);
        assert_eq!(pool.iter().map(|k| k.frame).collect::<Vec<_>>(), vec![0, 4, 2]);
        // Room left: always kept.
        let mut small = vec![];
        assert_eq!(admit(&mut small, kept(5, vec![1.0], 0.1), 2, Place::Slice).outcome, Outcome::Added);
        assert_eq!(small.len(), 1);
    }

    #[test]
    fn most_similar_orders_least_similar_first() {
        let vectors = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        assert_eq!(most_similar(&[0, 1, 2], &vectors, &[1.0, 0.0], 2), vec![2, 0]);
        assert_eq!(most_similar(&[1, 2], &vectors, &[1.0, 0.0], 5), vec![1, 2]);
    }
}
