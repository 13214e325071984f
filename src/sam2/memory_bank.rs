//! The memory bank of one tracked object: what Meta's video predictor keeps in
//! `output_dict_per_obj[obj]` (`cond_frame_outputs` and `non_cond_frame_outputs`), as a Rust type the core
//! owns and that can be inspected.
//!
//! Each entry is one frame's output: its spatial memory (`maskmem_features`, kept on the device in f32
//! holding bf16-rounded values, as Meta stores it in bf16), its object pointer, object score and
//! low-resolution mask logits. Which entries a frame attends to is decided here from frame indices alone
//! ([`MemoryBank::select`], the index logic of `SAM2Base._prepare_memory_conditioned_features`), so the
//! choice can be shown to a user and unit-tested without tensors; `sam2_base.rs` turns it into tensors.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use serde::Serialize;

use super::config::TrackingConfig;

/// One frame's output, as the bank keeps it.
#[derive(Clone, Debug)]
pub struct MemoryEntry {
    /// `[1, mem_dim, H/16, W/16]`, bf16-rounded.
    pub maskmem_features: Tensor<4>,
    /// `[1, hidden_dim]`
    pub obj_ptr: Tensor<2>,
    /// `[1, 1]`; > 0 means the object is present.
    pub object_score_logits: Tensor<2>,
    /// Low-resolution mask logits `[1, 1, S/4, S/4]`.
    pub pred_masks: Tensor<4>,
    /// The decoder's predicted IoU `[1, 1]` (SAM2-SGP's eviction compares it).
    pub iou_score: Tensor<2>,
}

/// A spatial memory a frame attends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SpatialSlot {
    pub frame: usize,
    /// 0 for conditioning frames, 1 (oldest) ..= num_maskmem - 1 (the neighbouring frame) otherwise.
    pub t_pos: usize,
    pub conditioning: bool,
}

/// An object pointer a frame attends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PointerSlot {
    pub frame: usize,
    /// Temporal distance fed to the pointer's position encoding (signed in SAM2.1).
    pub distance: i64,
}

/// What one frame attends to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemorySelection {
    pub spatial: Vec<SpatialSlot>,
    pub pointers: Vec<PointerSlot>,
    /// `max_obj_ptrs_in_encoder - 1` for this video: the pointer distances are divided by it.
    pub pointer_distance_scale: usize,
}

/// A bank entry as a user sees it (the teaching view, logs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntryInfo {
    pub frame: usize,
    pub conditioning: bool,
}

/// Which tracked (non-conditioning) memories a frame attends to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecentMemories {
    /// SAM2's: the frames just before in the direction of travel (`t-1 .. t-(num_maskmem-1)`, every `stride`).
    #[default]
    Neighbours,
    /// Whatever tracked memories the bank holds on the past side, the closest first: for an eviction policy
    /// that decides what stays (SAM2-SGP's similarity eviction, in `session/propagate.rs`). The closest gets the
    /// `t-1` temporal encoding, the next `t-2`, and so on.
    Kept,
}

#[derive(Clone, Debug, Default)]
pub struct MemoryBank {
    cond: BTreeMap<usize, MemoryEntry>,
    non_cond: BTreeMap<usize, MemoryEntry>,
    /// Overrides the config's `max_cond_frames_in_attn` when set.
    max_conditioning: Option<usize>,
    recent: RecentMemories,
    /// Bumped by every change: what a frame attends to can be cached while it stays the same.
    generation: u64,
}

impl MemoryBank {
    pub fn new() -> Self {
        Self::default()
    }

    /// A frame given by the user (mask or clicks): it conditions every other frame. Replaces any tracked
    /// output of the same frame, as `propagate_in_video_preflight` does.
    pub fn insert_conditioning(&mut self, frame: usize, entry: MemoryEntry) {
        self.generation += 1;
        self.non_cond.remove(&frame);
        self.cond.insert(frame, entry);
    }

    /// A frame the model tracked; overwrites the same frame's earlier tracking (a second pass).
    pub fn insert_tracked(&mut self, frame: usize, entry: MemoryEntry) {
        self.generation += 1;
        self.non_cond.insert(frame, entry);
    }

    /// At most `max` conditioning frames in the memory attention (the temporally closest, Meta's
    /// `select_closest_cond_frames`); `None` keeps the config's `max_cond_frames_in_attn`. The others stay in
    /// the bank and may still be selected as recent frames, as in Meta's code.
    pub fn set_max_conditioning(&mut self, max: Option<usize>) {
        self.generation += 1;
        self.max_conditioning = max;
    }

    pub fn set_recent_memories(&mut self, recent: RecentMemories) {
        self.generation += 1;
        self.recent = recent;
    }

    /// Changes whenever the bank does (entries, policy).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The tracked frames the bank holds, in frame order.
    pub fn tracked_frames(&self) -> impl Iterator<Item = usize> + '_ {
        self.non_cond.keys().copied()
    }

    pub fn get(&self, frame: usize) -> Option<&MemoryEntry> {
        self.cond.get(&frame).or_else(|| self.non_cond.get(&frame))
    }

    pub fn is_conditioning(&self, frame: usize) -> bool {
        self.cond.contains_key(&frame)
    }

    pub fn conditioning_frames(&self) -> impl Iterator<Item = usize> + '_ {
        self.cond.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.cond.is_empty() && self.non_cond.is_empty()
    }

    /// Every entry, in frame order.
    pub fn entries(&self) -> Vec<EntryInfo> {
        let mut all: Vec<EntryInfo> = self
            .cond
            .keys()
            .map(|&frame| EntryInfo { frame, conditioning: true })
            .chain(self.non_cond.keys().map(|&frame| EntryInfo { frame, conditioning: false }))
            .collect();
        all.sort_by_key(|e| e.frame);
        all
    }

    /// Drops tracked (non-conditioning) entries for which `keep` is false, to bound memory on long volumes.
    pub fn retain_tracked(&mut self, mut keep: impl FnMut(usize) -> bool) {
        self.generation += 1;
        self.non_cond.retain(|&frame, _| keep(frame));
    }

    /// The memories frame `frame` attends to when tracked in the given direction
    /// (`_prepare_memory_conditioned_features`, index logic only). `num_frames` is the video length.
    pub fn select(&self, frame: usize, reverse: bool, num_frames: usize, cfg: &TrackingConfig) -> MemorySelection {
        let max_cond = self.max_conditioning.map_or(cfg.max_cond_frames_in_attn, |m| m.max(1) as i64);
        if self.recent == RecentMemories::Kept {
            return self.select_kept(frame, reverse, num_frames, cfg, max_cond);
        }
        let (selected, unselected) = self.closest_conditioning(frame, max_cond);
        let from_unselected_or_tracked = |t: i64| -> Option<usize> {
            let t = usize::try_from(t).ok()?;
            (self.non_cond.contains_key(&t) || unselected.contains(&t)).then_some(t)
        };

        let mut spatial: Vec<SpatialSlot> =
            selected.iter().map(|&f| SpatialSlot { frame: f, t_pos: 0, conditioning: true }).collect();
        let stride = cfg.memory_temporal_stride_for_eval.max(1) as i64;
        let f = frame as i64;
        for t_pos in 1..cfg.num_maskmem {
            let t_rel = (cfg.num_maskmem - t_pos) as i64;
            let prev = match (t_rel, reverse) {
                (1, false) => f - 1,
                (1, true) => f + 1,
                // Every `stride`-th frame before (after) the frame, then further back (forward).
                (_, false) => (f - 2).div_euclid(stride) * stride - (t_rel - 2) * stride,
                (_, true) => -(-(f + 2)).div_euclid(stride) * stride + (t_rel - 2) * stride,
            };
            if let Some(prev) = from_unselected_or_tracked(prev) {
                spatial.push(SpatialSlot { frame: prev, t_pos, conditioning: self.cond.contains_key(&prev) });
            }
        }

        let max_ptrs = num_frames.min(cfg.max_obj_ptrs_in_encoder);
        let mut pointers = conditioning_pointers(&selected, frame, reverse, cfg);
        for t_diff in 1..max_ptrs as i64 {
            let t = if reverse { f + t_diff } else { f - t_diff };
            if t < 0 || t >= num_frames as i64 {
                break;
            }
            if let Some(t) = from_unselected_or_tracked(t) {
                pointers.push(PointerSlot { frame: t, distance: t_diff });
            }
        }
        MemorySelection { spatial, pointers, pointer_distance_scale: max_ptrs.saturating_sub(1) }
    }

    /// [`RecentMemories::Kept`]: the selected conditioning frames as usual, then the kept tracked memories on
    /// the past side, closest first, for both the spatial memories and the pointers.
    fn select_kept(&self, frame: usize, reverse: bool, num_frames: usize, cfg: &TrackingConfig, max_cond: i64) -> MemorySelection {
        let (selected, _) = self.closest_conditioning(frame, max_cond);
        let mut past: Vec<usize> = self.non_cond.keys().copied().filter(|&t| if reverse { t > frame } else { t < frame }).collect();
        past.sort_by_key(|&t| t.abs_diff(frame));
        let mut spatial: Vec<SpatialSlot> =
            selected.iter().map(|&f| SpatialSlot { frame: f, t_pos: 0, conditioning: true }).collect();
        let slots = cfg.num_maskmem.saturating_sub(1);
        spatial.extend(past.iter().take(slots).enumerate().map(|(rank, &t)| SpatialSlot { frame: t, t_pos: slots - rank, conditioning: false }));
        let max_ptrs = num_frames.min(cfg.max_obj_ptrs_in_encoder);
        let mut pointers = conditioning_pointers(&selected, frame, reverse, cfg);
        pointers.extend(past.iter().take(max_ptrs.saturating_sub(1)).map(|&t| PointerSlot { frame: t, distance: t.abs_diff(frame) as i64 }));
        MemorySelection { spatial, pointers, pointer_distance_scale: max_ptrs.saturating_sub(1) }
    }

    /// `select_closest_cond_frames`: all conditioning frames, or at most `max` of them: the closest before,
    /// the closest at or after, then the temporally closest others. Returns (selected, unselected).
    fn closest_conditioning(&self, frame: usize, max: i64) -> (Vec<usize>, Vec<usize>) {
        let all: Vec<usize> = self.cond.keys().copied().collect();
        if max < 0 || all.len() <= max as usize {
            return (all, Vec::new());
        }
        let mut selected = Vec::new();
        selected.extend(all.iter().copied().filter(|&t| t < frame).max());
        selected.extend(all.iter().copied().filter(|&t| t >= frame).min());
        let mut rest: Vec<usize> = all.iter().copied().filter(|t| !selected.contains(t)).collect();
        rest.sort_by_key(|&t| (t as i64 - frame as i64).abs());
        let room = (max as usize).saturating_sub(selected.len());
        selected.extend(rest.iter().take(room));
        let unselected = all.into_iter().filter(|t| !selected.contains(t)).collect();
        (selected, unselected)
    }
}

/// The pointers of the selected conditioning frames: only those in the past (in the direction of travel)
/// give pointers during inference; SAM2.1 signs the distance by the direction.
fn conditioning_pointers(selected: &[usize], frame: usize, reverse: bool, cfg: &TrackingConfig) -> Vec<PointerSlot> {
    let sign = if reverse { -1 } else { 1 };
    selected
        .iter()
        .filter(|&&t| if reverse { t >= frame } else { t <= frame })
        .map(|&t| {
            let d = frame as i64 - t as i64;
            PointerSlot { frame: t, distance: if cfg.use_signed_tpos_enc_to_obj_ptrs { d * sign } else { d.abs() } }
        })
        .collect()
}

/// Rounds f32 values to bf16 precision (8 significant bits, nearest), staying in f32: Meta's video predictor
/// stores memories as bf16, and the next frames attend to the rounded values. Veltkamp's splitting
/// (`c = x * (2^16 + 1)`, `c - (c - x)`) does it with three IEEE operations on any backend (WebGPU has no bf16).
pub fn round_to_bf16(x: Tensor<4>) -> Tensor<4> {
    let c = x.clone().mul_scalar(65537.0);
    c.clone() - (c - x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn entry() -> MemoryEntry {
        let d = Device::flex();
        MemoryEntry {
            maskmem_features: Tensor::zeros([1, 1, 1, 1], &d),
            obj_ptr: Tensor::zeros([1, 1], &d),
            object_score_logits: Tensor::zeros([1, 1], &d),
            pred_masks: Tensor::zeros([1, 1, 1, 1], &d),
            iou_score: Tensor::ones([1, 1], &d),
        }
    }

    fn bank(cond: &[usize], tracked: &[usize]) -> MemoryBank {
        let mut b = MemoryBank::new();
        cond.iter().for_each(|&f| b.insert_conditioning(f, entry()));
        tracked.iter().for_each(|&f| b.insert_tracked(f, entry()));
        b
    }

    fn frames(slots: &[SpatialSlot]) -> Vec<(usize, usize)> {
        slots.iter().map(|s| (s.frame, s.t_pos)).collect()
    }

    #[test]
    fn forward_takes_conditioning_frames_and_the_last_six() {
        let b = bank(&[3], &[4, 5, 6, 7, 8, 9, 10]);
        let s = b.select(11, false, 20, &TrackingConfig::sam2_1());
        // t-1 has t_pos 6 (slot maskmem_tpos_enc[0]), t-6 has t_pos 1.
        assert_eq!(frames(&s.spatial), vec![(3, 0), (5, 1), (6, 2), (7, 3), (8, 4), (9, 5), (10, 6)]);
        // Pointers: the conditioning frame (signed distance 8), then t-1 .. t-15 that exist.
        assert_eq!(s.pointers[0], PointerSlot { frame: 3, distance: 8 });
        assert_eq!(s.pointers.iter().skip(1).map(|p| p.frame).collect::<Vec<_>>(), vec![10, 9, 8, 7, 6, 5, 4]);
        assert_eq!(s.pointer_distance_scale, 15);
    }

    #[test]
    fn reverse_reuses_forward_outputs_and_signs_distances() {
        // Mask on frame 3, forward pass tracked 4..6; the reverse pass at frame 2 sees 3 (cond) and 4, 5, 6.
        let b = bank(&[3], &[4, 5, 6]);
        let s = b.select(2, true, 7, &TrackingConfig::sam2_1());
        assert_eq!(frames(&s.spatial), vec![(3, 0), (6, 3), (5, 4), (4, 5)]);
        assert_eq!(s.pointers[0], PointerSlot { frame: 3, distance: 1 });
        assert_eq!(s.pointers.iter().skip(1).map(|p| (p.frame, p.distance)).collect::<Vec<_>>(), vec![(4, 2), (5, 3), (6, 4)]);
        assert_eq!(s.pointer_distance_scale, 6);
        // SAM2.0: unsigned distances (and no temporal encoding at all, decided by the caller).
        let s = b.select(2, true, 7, &TrackingConfig::sam2_0());
        assert_eq!(s.pointers[0].distance, 1);
    }

    #[test]
    fn future_conditioning_frames_give_memory_but_no_pointer() {
        let b = bank(&[1, 5], &[2]);
        let s = b.select(3, false, 7, &TrackingConfig::sam2_1());
        assert_eq!(frames(&s.spatial), vec![(1, 0), (5, 0), (2, 6)]);
        assert_eq!(s.pointers.iter().map(|p| p.frame).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn capped_conditioning_frames_keep_the_closest_and_reuse_the_others_as_recent() {
        let mut cfg = TrackingConfig::sam2_1();
        cfg.max_cond_frames_in_attn = 2;
        let b = bank(&[0, 4, 9, 20], &[]);
        let s = b.select(5, false, 30, &cfg);
        let cond: Vec<usize> = s.spatial.iter().filter(|x| x.t_pos == 0).map(|x| x.frame).collect();
        assert_eq!(cond, vec![4, 9]);
        // Frame 4 is also t-1 ... but it is selected, so only unselected conditioning frames fill recent slots:
        // frame 0 is t-5 (t_pos 2).
        assert_eq!(frames(&s.spatial)[2..], [(0, 2)]);
    }

    #[test]
    fn kept_memories_are_selected_closest_first_wherever_they_are() {
        let mut b = bank(&[10], &[1, 4, 9, 12, 13]);
        b.set_recent_memories(RecentMemories::Kept);
        let sel = b.select(11, false, 20, &TrackingConfig::sam2_1());
        // Conditioning frame 10, then the kept frames before 11: 9 (t-1), 4 (t-2), 1 (t-3).
        assert_eq!(frames(&sel.spatial), vec![(10, 0), (9, 6), (4, 5), (1, 4)]);
        assert_eq!(sel.pointers.iter().map(|p| (p.frame, p.distance)).collect::<Vec<_>>(), vec![(10, 1), (9, 2), (4, 7), (1, 10)]);
        let rev = b.select(11, true, 20, &TrackingConfig::sam2_1());
        assert_eq!(frames(&rev.spatial), vec![(10, 0), (12, 6), (13, 5)]);
    }

    #[test]
    fn bf16_rounding_matches_the_bf16_type() {
        let values: Vec<f32> = (0..20000).map(|i| ((i as f32) * 0.7311).sin() * 10f32.powi(i % 9 - 4)).collect();
        let t = Tensor::<4>::from_data(burn::tensor::TensorData::new(values.clone(), [1, 1, 1, values.len()]), &Device::flex());
        let ours = round_to_bf16(t).into_data().try_to_vec::<f32>().unwrap();
        let same = values.iter().zip(&ours).filter(|(v, o)| burn::tensor::bf16::from_f32(**v).to_f32() == **o).count();
        assert_eq!(same, values.len());
    }

    #[test]
    fn a_new_conditioning_frame_replaces_its_tracked_output() {
        let mut b = bank(&[], &[2, 3]);
        b.insert_conditioning(3, entry());
        assert_eq!(b.entries(), vec![EntryInfo { frame: 2, conditioning: false }, EntryInfo { frame: 3, conditioning: true }]);
    }
}
