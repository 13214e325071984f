//! 1S1Q / kS1Q ([`Mode::SupportsOnly`](super::Mode)): every query slice is segmented from the supports alone,
//! as the last frame of a fresh video `[supports..., query]`. The supports' conditioning memories do not
//! depend on the query, so they are encoded once and reused.

use std::rc::Rc;

use image::RgbImage;

use super::bank_snapshot::{ObjectBank, Place, StepBank};
use super::sgp::{chosen_supports, scored_supports, similarity_vector};
use super::feature_cache::{SharedFeatureCache, encode};
use super::{MemoryOptions, Session, SliceOutput, Support, class_mask, has_class};
use crate::sam2::memory_bank::{MemoryBank, MemoryEntry};
use crate::sam2::sam2_base::{ImageFeatures, Sam2Base};
use crate::sam2::video_predictor::mask_to_model_size;
use burn::tensor::Tensor;

/// 1S1Q / kS1Q: supports encoded once into conditioning memories, every query tracked against them alone.
pub(super) struct SupportsOnlyRun<'m> {
    model: &'m Sam2Base,
    pub(super) query: Rc<Vec<RgbImage>>,
    /// `[support][object]`: the support's conditioning memory for that class, if it holds the class.
    entries: Vec<Vec<Option<MemoryEntry>>>,
    /// The supports' similarity vectors, computed when `select_supports` is set.
    vectors: Option<Vec<Vec<f32>>>,
    memory: MemoryOptions,
    next: usize,
    pub(super) frames_encoded: usize,
    /// Supports not yet encoded (done on the first step, so that `start` stays synchronous).
    pending_supports: Vec<Support>,
    classes: Vec<u8>,
    features: Option<SharedFeatureCache>,
}

impl<'m> SupportsOnlyRun<'m> {
    pub(super) fn new(session: &Session, model: &'m Sam2Base, memory: MemoryOptions) -> Result<Self, String> {
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
            features: session.features.clone(),
        })
    }

    /// Each support's conditioning memory per class: `add_new_mask` and the preflight of a fresh video.
    async fn encode_supports(&mut self) -> Result<(), String> {
        let device = self.model.device();
        let mut vectors = Vec::new();
        for support in std::mem::take(&mut self.pending_supports) {
            let (features, encoded) = encode(self.model, self.features.as_ref(), &support.image);
            self.frames_encoded += usize::from(encoded);
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

    pub(super) async fn step(&mut self) -> Option<Result<SliceOutput, String>> {
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
        let (features, encoded) = encode(self.model, self.features.as_ref(), &image);
        self.frames_encoded += usize::from(encoded);
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
pub(super) fn conditioning_memory(model: &Sam2Base, features: &ImageFeatures, mask: Tensor<4>) -> MemoryEntry {
    let mut out = model.track_step(0, true, features, None, Some(mask), &MemoryBank::new(), 1, false, false, None);
    out.maskmem_features = Some(model.encode_conditioning_memory(features, &out.sam));
    out.memory_entry().expect("memory encoded above")
}
