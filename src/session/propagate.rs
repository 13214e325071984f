//! S1SFQ / kSFQ ([`Mode::Propagate`](super::Mode)), and masks drawn on query slices: Meta's video predictor
//! over the query sequence with the supports inserted, visited in `propagate_in_video`'s order (forward from
//! the first conditioning frame, then in reverse), releasing tracked memories no later slice can select.

use std::rc::Rc;

use burn::tensor::{Device, Tensor};
use image::{GrayImage, RgbImage};

use super::feature_cache::{SharedFeatureCache, encode};
use super::bank_snapshot::{Admission, ObjectBank, Place, StepBank, SupportScore};
use super::sgp::{Kept, admit, chosen_supports, normalize, scored_supports, similarity_vector};
use super::slice_prompt::SlicePrompt;
use super::{MemoryOptions, Placement, Session, SliceOutput, Support, class_mask, has_class, read_f32};
use crate::sam2::memory_bank::RecentMemories;
use crate::sam2::sam2_base::{ImageFeatures, Sam2Base, SamOutput};
use crate::sam2::transforms;
use crate::sam2::video_predictor::{FrameOutput, FrameSource, VideoPredictor};

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
    cache: Option<SharedFeatureCache>,
}

impl SequenceFrames {
    fn image(&self, index: usize) -> Result<&RgbImage, String> {
        match self.sequence.get(index) {
            Some(SeqFrame::Query(i)) => Ok(&self.query[*i]),
            Some(SeqFrame::Support(i)) => Ok(&self.supports[*i].image),
            None => Err(format!("frame {index} is out of range")),
        }
    }
}

impl FrameSource for SequenceFrames {
    fn num_frames(&self) -> usize {
        self.sequence.len()
    }

    fn frame(&self, index: usize) -> Result<Tensor<4>, String> {
        Ok(transforms::preprocess_rgb8(self.image(index)?, self.size, &self.device))
    }

    fn features(&self, model: &Sam2Base, index: usize) -> Result<(ImageFeatures, bool), String> {
        Ok(encode(model, self.cache.as_ref(), self.image(index)?))
    }
}

/// S1SFQ / kSFQ (and masks drawn on query slices): Meta's video predictor over the query sequence.
pub(crate) struct PropagateRun {
    pub(super) predictor: VideoPredictor<'static>,
    sequence: Vec<SeqFrame>,
    /// (sequence frame, reverse) in the order Meta's `propagate_in_video` visits them (forward, then reverse).
    pub(super) order: Vec<(usize, bool)>,
    next: usize,
    /// The first conditioning frame: the reverse pass needs the forward pass's memories after it.
    start: usize,
    /// How far back (in the direction of travel) a frame's memory can still be selected.
    reach: usize,
    /// Supports encoded to choose them by similarity (outside the predictor).
    pub(super) extra_encoded: usize,
    /// SAM2-SGP's eviction: per object, the kept tracked memories (frame, unit feature vector, IoU).
    eviction: Option<Vec<Vec<Kept>>>,
    /// The session's index of each inserted support (`SeqFrame::Support(i)` is support `support_ids[i]`).
    support_ids: Vec<usize>,
    /// SGP's support selection, as scored (empty without `select_supports`).
    support_scores: Vec<SupportScore>,
    /// Corrections (prompts of round >= 1), applied when `order` reaches the round's first step.
    rounds: Vec<CorrectionRound>,
    /// Every tracked memory is kept (no release): corrections may come on any slice.
    keep_memories: bool,
    /// The query slices' size `[width, height]` (prompts are in their pixels).
    slice_size: [usize; 2],
    /// Where the current stretch of steps began: 0, or where [`Self::track_again`] added a round.
    stretch_start: usize,
}

/// One round of corrections: its prompts on sequence frames, and where its passes begin in `order`.
struct CorrectionRound {
    first_step: usize,
    /// (sequence frame, object, prompt), applied when the round starts (none when applied already).
    prompts: Vec<(usize, usize, SlicePrompt)>,
    started: bool,
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

impl PropagateRun {
    pub(super) async fn new(session: &Session, model: &Sam2Base, at: Placement, memory: MemoryOptions) -> Result<Self, String> {
        let n = session.query.len();
        let at = match at {
            Placement::Middle => n / 2,
            Placement::Index(i) if i <= n => i,
            Placement::Index(i) => return Err(format!("supports cannot be placed at slice {i}: the query has {n} slices")),
        };
        if session.supports.is_empty() && session.query_masks.is_empty() && session.query_prompts.is_empty() {
            return Err("give a support, a mask drawn on a query slice, or clicks or a box".into());
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
            cache: session.features.clone(),
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
        // Clicks and boxes after the masks: on a painted slice they refine the class's mask. Corrections
        // (later rounds) wait for the passes before them; they make their slice a conditioning frame.
        let (w, h) = session.query[0].dimensions();
        let slice_size = [w as usize, h as usize];
        let mut corrections = Vec::new();
        for p in &session.query_prompts {
            let frame = if p.slice < at { p.slice } else { p.slice + supports.len() };
            let object = session.classes.iter().position(|&c| c == p.class).ok_or("a prompt for an unknown class")?;
            match p.round {
                0 => _ = p.apply(&mut predictor, frame, object, slice_size)?,
                _ => corrections.push((frame, object, p.clone())),
            }
        }
        if !corrections.is_empty() && memory.similarity_eviction {
            return Err("corrections (clicks after a run) need every tracked memory: turn similarity eviction off".into());
        }
        predictor.set_add_all_frames_to_correct_as_cond(true);
        let forward = predictor.begin_propagation(None, None, false)?;
        let start = predictor.first_conditioning_frame().expect("prompts added");
        let mut order: Vec<(usize, bool)> = forward.into_iter().map(|f| (f, false)).collect();
        // Meta's reverse pass starts at the same (earliest) conditioning frame; it re-yields that frame.
        order.extend((0..=start).rev().filter(|_| start > 0).map(|f| (f, true)));
        let rounds = plan_rounds(corrections, &mut order, start, sequence.len());
        let cfg = model.tracking_config();
        let reach = cfg.num_maskmem * cfg.memory_temporal_stride_for_eval.max(1) + cfg.max_obj_ptrs_in_encoder;
        let eviction = memory.similarity_eviction.then(|| (0..session.classes.len()).map(|_| Vec::new()).collect());
        let keep_memories = session.keep_memories || !rounds.is_empty();
        Ok(Self {
            predictor,
            sequence,
            order,
            next: 0,
            start,
            reach,
            extra_encoded,
            eviction,
            support_ids,
            support_scores,
            rounds,
            keep_memories,
            slice_size,
            stretch_start: 0,
        })
    }

    /// All supports, or (SGP) the `k` most similar to the query slice where they are inserted.
    async fn choose_supports(session: &Session, model: &Sam2Base, at: usize, memory: MemoryOptions) -> Result<ChosenSupports, String> {
        let all: Vec<usize> = (0..session.supports.len()).collect();
        let Some(k) = memory.select_supports.filter(|&k| k < session.supports.len()) else {
            return Ok(ChosenSupports { supports: session.supports.clone(), ids: all, scores: Vec::new(), encoded: 0 });
        };
        let anchor = &session.query[at.min(session.query.len() - 1)];
        let cache = session.features.as_ref();
        let (anchor, ran) = encode(model, cache, anchor);
        let q = similarity_vector(&anchor).await?;
        let mut encoded_count = usize::from(ran);
        let mut vectors = Vec::new();
        for support in &session.supports {
            let (features, ran) = encode(model, cache, &support.image);
            vectors.push(similarity_vector(&features).await?);
            encoded_count += usize::from(ran);
        }
        let scores = scored_supports(&all, &vectors, &q, k);
        let ids = chosen_supports(&scores);
        let supports = ids.iter().map(|&i| session.supports[i].clone()).collect();
        Ok(ChosenSupports { supports, ids, scores, encoded: encoded_count })
    }

    pub(super) async fn step(&mut self) -> Option<Result<SliceOutput, String>> {
        loop {
            if let Err(e) = self.correct_before(self.next) {
                return Some(Err(e));
            }
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
                if !self.keep_memories {
                    self.release_memories(frame, reverse);
                }
                Vec::new()
            };
            if let SeqFrame::Query(slice) = self.sequence[frame] {
                let bank = self.bank_view(&outputs, admissions);
                let logits = outputs.into_iter().map(|o| o.pred_masks).collect();
                return Some(Ok(SliceOutput { slice, reverse, logits, supports_used: Vec::new(), bank }));
            }
        }
    }

    /// Applies the corrections of the round whose passes begin at step `next`, if one does, and runs the
    /// preflight that turns them into conditioning memories.
    fn correct_before(&mut self, next: usize) -> Result<(), String> {
        let Some(round) = self.rounds.iter_mut().find(|r| r.first_step == next && !r.started) else {
            return Ok(());
        };
        round.started = true;
        for (frame, object, prompt) in std::mem::take(&mut round.prompts) {
            self.apply_correction(frame, object, &prompt, 0)?;
        }
        self.predictor.begin_propagation(None, None, false).map(drop)
    }

    /// A correction's clicks from the `from`-th on (all: its box too) on a frame the run tracked; the last
    /// call's output.
    pub(super) fn apply_correction(&mut self, frame: usize, object: usize, prompt: &SlicePrompt, from: usize) -> Result<SamOutput, String> {
        if self.predictor.tracked_direction(frame, object).is_none() {
            return Err(format!("slice {}: a correction on a slice no earlier round tracked", prompt.slice));
        }
        match from {
            0 => prompt.apply(&mut self.predictor, frame, object, self.slice_size),
            _ => prompt.apply_clicks(&mut self.predictor, frame, object, self.slice_size, from)?.ok_or_else(|| "no click to add".to_string()),
        }
    }

    /// The sequence frame of query slice `slice`.
    pub(super) fn frame_of(&self, slice: usize) -> Option<usize> {
        self.sequence.iter().position(|f| *f == SeqFrame::Query(slice))
    }

    pub(super) fn slice_size(&self) -> [usize; 2] {
        self.slice_size
    }

    pub(super) fn keeps_memories(&self) -> bool {
        self.keep_memories && self.eviction.is_none()
    }

    /// Whether every step, every round included, has been taken.
    pub(super) fn finished(&self) -> bool {
        self.next == self.order.len()
    }

    /// Steps from where this stretch of the run began ([`Self::track_again`]) to the end.
    pub(super) fn steps_in_stretch(&self) -> usize {
        self.order.len() - self.stretch_start
    }

    /// After the run finished: the corrections already applied to the predictor (`(frame, object, prompt)`)
    /// become a new round, whose passes are added to the order; stepping goes on from there.
    pub(super) fn track_again(&mut self, corrections: Vec<(usize, usize, SlicePrompt)>) -> Result<(), String> {
        if corrections.is_empty() {
            return Err("no correction to track again from: click on a slice first".into());
        }
        self.stretch_start = self.order.len();
        let mut rounds = plan_rounds(corrections, &mut self.order, self.start, self.sequence.len());
        for round in &mut rounds {
            round.prompts.clear();
        }
        self.rounds.extend(rounds);
        Ok(())
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

/// Orders each correction round's passes after round 0's (`order`, from the first conditioning frame
/// `start`): a round tracks again from its corrected frames outwards, in the direction each was tracked
/// (forward beyond `start`, in reverse up to it, as Meta's `frames_tracked` records them and keeps them):
/// one forward pass from the first corrected frame on that side, one reverse pass from the last on the other
/// (Meta's `propagate_in_video(start_frame_idx, reverse)`; a pass from each corrected frame would track the
/// same frames again to the same result), the pass with the earlier start first. A correction on frame 0
/// tracked in reverse has no frame left to track (Meta yields nothing): its own step yields it.
fn plan_rounds(corrections: Vec<(usize, usize, SlicePrompt)>, order: &mut Vec<(usize, bool)>, start: usize, n: usize) -> Vec<CorrectionRound> {
    let mut by_round: std::collections::BTreeMap<usize, Vec<(usize, usize, SlicePrompt)>> = Default::default();
    for c in corrections {
        by_round.entry(c.2.round).or_default().push(c);
    }
    let reversed = |f: usize| f < start || (f == start && start > 0);
    let mut rounds = Vec::new();
    for (_, prompts) in by_round {
        let frames = || prompts.iter().map(|(f, ..)| *f);
        let mut passes: Vec<(usize, bool)> = Vec::new();
        passes.extend(frames().filter(|&f| !reversed(f)).min().map(|f| (f, false)));
        passes.extend(frames().filter(|&f| reversed(f)).max().map(|f| (f, true)));
        passes.sort();
        let first_step = order.len();
        for (from, reverse) in passes {
            match reverse {
                false => order.extend((from..n).map(|f| (f, false))),
                true => order.extend((0..=from).rev().map(|f| (f, true))),
            }
        }
        rounds.push(CorrectionRound { first_step, prompts, started: false });
    }
    rounds
}
