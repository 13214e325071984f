//! Memory-bank snapshots: at each step of a run, per class, what the memory bank holds and what SAM2 attends
//! to for the slice being segmented, and why (SAM2-SGP's support scores and eviction rule). The page's
//! teaching view (`www/bank.js`) draws them.
//!
//! A snapshot is small and serializable (frame references, slots, scores; no tensors), so the browser can
//! show it at every step and replay it after the run. It is built from the core's own decisions: the
//! [`MemorySelection`] the model attends to at that step (taken in `video_predictor.rs` and the session's runs right
//! where the step runs), the bank's entries at that moment, SGP's scores as the session ranked them and the
//! eviction rule's numbers as it applied them. Nothing here decides anything.

use serde::Serialize;

use crate::sam2::config::TrackingConfig;
use crate::sam2::memory_bank::{EntryInfo, MemorySelection};

/// A frame of the run as the user knows it: a query slice, or a support (its index among the session's
/// supports, in the order they were added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    Slice(usize),
    Support(usize),
}

/// One step of a run: per class (in the session's class order), the bank and the attention.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepBank {
    /// SAM2's `num_maskmem`: the conditioning frames plus `num_maskmem - 1` tracked memories.
    pub num_maskmem: usize,
    pub objects: Vec<ObjectBank>,
}

/// One class's bank at one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ObjectBank {
    /// The slice is a conditioning frame of this class (a drawn mask): its output is the user's mask, the
    /// model attends to nothing.
    pub conditioning: bool,
    /// Every memory the bank holds when the slice is segmented (before its own memory is added).
    pub held: Vec<Held>,
    /// The spatial memories attended to, in the order the memory attention reads them.
    pub spatial: Vec<Spatial>,
    /// The object pointers attended to.
    pub pointers: Vec<Pointer>,
    /// Pointer distances are divided by this before their temporal encoding (`max_obj_ptrs_in_encoder - 1`).
    pub pointer_distance_scale: usize,
    /// SGP's support selection (`select_supports`): every candidate support with its score; empty otherwise.
    pub supports: Vec<SupportScore>,
    /// SGP's similarity eviction (`similarity_eviction`): what happened to this slice's new memory.
    pub eviction: Option<Admission>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Held {
    pub at: Place,
    pub conditioning: bool,
}

/// A spatial memory slot (Meta's `t_pos`; see [`crate::sam2::memory_bank::SpatialSlot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Spatial {
    pub at: Place,
    /// 0 for conditioning frames, `num_maskmem - 1` for the neighbouring slice, down to 1 for the oldest.
    pub t_pos: usize,
    /// The row of `maskmem_tpos_enc` added to this memory's position encoding: `num_maskmem - t_pos - 1`.
    pub tpos_enc: usize,
    pub conditioning: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pointer {
    pub at: Place,
    /// The temporal distance fed to the pointer's position encoding (signed in SAM2.1).
    pub distance: i64,
}

/// A candidate support of SGP's selection.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SupportScore {
    pub support: usize,
    /// Cosine similarity of the support's and the anchor slice's stride-16 image features.
    pub score: f32,
    /// 1 = the most similar.
    pub rank: usize,
    pub chosen: bool,
}

/// SGP's eviction rule applied to a new tracked memory (see `MemoryOptions::similarity_eviction`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Admission {
    pub new: Place,
    /// The new mask's predicted IoU.
    pub new_iou: f32,
    pub capacity: usize,
    /// The kept memories before the decision.
    pub pool: Vec<PoolMember>,
    pub outcome: Outcome,
    /// The kept memory least similar to the new one (`i` of the rule) and that similarity.
    pub least_similar: Option<(Place, f32)>,
    /// The kept memory most similar to `i` (`j`, the one the new memory would replace) and that similarity.
    pub closest_to_it: Option<(Place, f32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PoolMember {
    pub at: Place,
    pub iou: f32,
    /// Cosine similarity of its memory features to the new memory's.
    pub similarity_to_new: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The pool had room.
    Added,
    /// It replaced `closest_to_it`: sim(new, i) < sim(i, j) and its IoU > j's IoU - 0.1.
    Replaced,
    /// Not kept: the rule's conditions failed.
    Rejected,
}

impl ObjectBank {
    /// A class's bank at a step from what the core held and selected; `place` names the sequence frames.
    pub fn new(held: &[EntryInfo], selection: Option<&MemorySelection>, cfg: &TrackingConfig, place: impl Fn(usize) -> Place) -> Self {
        let held = held.iter().map(|e| Held { at: place(e.frame), conditioning: e.conditioning }).collect();
        let Some(sel) = selection else {
            return Self { conditioning: true, held, ..Self::default() };
        };
        let spatial = sel
            .spatial
            .iter()
            .map(|s| Spatial { at: place(s.frame), t_pos: s.t_pos, tpos_enc: cfg.num_maskmem - s.t_pos - 1, conditioning: s.conditioning })
            .collect();
        let pointers = sel.pointers.iter().map(|p| Pointer { at: place(p.frame), distance: p.distance }).collect();
        Self { conditioning: false, held, spatial, pointers, pointer_distance_scale: sel.pointer_distance_scale, ..Self::default() }
    }
}

/// Candidates ranked by their `scores` (most similar first, ties by the lower index), the first `k` chosen.
pub fn rank_supports(candidates: &[usize], scores: impl Fn(usize) -> f32, k: usize) -> Vec<SupportScore> {
    let mut scored: Vec<(f32, usize)> = candidates.iter().map(|&i| (scores(i), i)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().enumerate().map(|(r, (score, support))| SupportScore { support, score, rank: r + 1, chosen: r < k.max(1) }).collect()
}
