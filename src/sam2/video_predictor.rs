//! `sam2/sam2_video_predictor.py`: segmenting a sequence of frames (a video, or the slices of a volume) from
//! masks or clicks given on some of them, one memory bank per object.
//!
//! The flow is Meta's: prompts (`add_new_mask`, `add_new_points_or_box`) are run at once and kept as
//! temporary outputs; `propagate_in_video` first turns them into conditioning memories (the preflight),
//! then tracks frame after frame in one direction. Calling it forward from the first prompted frame and then
//! in reverse from the last one is Meta's `propagate_in_video` order; the reverse pass reuses the memories
//! the forward pass left in the bank.
//!
//! Frames come from a [`FrameSource`] one at a time, and only the current frame's features are kept (Meta
//! caches the most recent frame too): a volume's memory cost is the banks, not its encoder features. A frame
//! is encoded once per visit whatever the number of objects.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::interpolate;
use super::memory_bank::{EntryInfo, MemoryBank, MemorySelection, RecentMemories};
use super::sam2_base::{ImageFeatures, PointInputs, Sam2Base, SamOutput, TrackOutput};

/// Where the frames come from: preprocessed model inputs `[1, 3, S, S]` on the model's device.
pub trait FrameSource {
    fn num_frames(&self) -> usize;
    fn frame(&self, index: usize) -> Result<Tensor<4>, String>;

    /// The frame's image features and whether the encoder ran for them: a source may keep features from
    /// earlier runs (the session's feature cache).
    fn features(&self, model: &Sam2Base, index: usize) -> Result<(ImageFeatures, bool), String> {
        Ok((model.forward_image(self.frame(index)?), true))
    }
}

/// What happened on one frame for one object, as the tests and the UI see it.
#[derive(Clone, Debug)]
pub struct FrameOutput {
    pub frame: usize,
    pub object: usize,
    pub reverse: bool,
    /// True for frames given by the user (their stored output is returned, nothing is recomputed).
    pub conditioning: bool,
    /// Low-resolution mask logits `[1, 1, S/4, S/4]`.
    pub pred_masks: Tensor<4>,
    pub object_score_logits: Tensor<2>,
    pub obj_ptr: Tensor<2>,
    /// The decoder's predicted IoU of the mask `[1, 1]`.
    pub iou_score: Tensor<2>,
    /// The frame's memory as stored in the bank.
    pub maskmem_features: Option<Tensor<4>>,
    /// The memory-conditioned features (tracked frames only).
    pub pix_feat_with_mem: Option<Tensor<4>>,
    /// What the object's bank held when the frame was reached (before its own memory was added).
    pub held: Vec<EntryInfo>,
    /// The memories the frame attended to (tracked frames only): the selection `track_step` makes from the
    /// same bank, taken here so that the teaching view shows the model's actual choice.
    pub selection: Option<MemorySelection>,
}

/// One object's prompts, temporary outputs and memory bank (`*_per_obj[obj_idx]` in Meta's state).
#[derive(Default)]
pub struct ObjectState {
    pub bank: MemoryBank,
    point_inputs: BTreeMap<usize, PointInputs>,
    mask_inputs: BTreeMap<usize, Tensor<4>>,
    /// Outputs of prompted frames not yet in the bank, and whether they are conditioning frames.
    temp: BTreeMap<usize, (TrackOutput, bool)>,
    /// Frames tracked so far and the direction they were tracked in.
    frames_tracked: BTreeMap<usize, bool>,
    /// The last prompted frame's memory-conditioned features: ((frame, reverse, initial conditioning frame,
    /// bank generation), features).
    /// Later clicks on that frame attend to the same bank, so they reuse them (a correction's memory
    /// attention costs far more than its mask decoder).
    conditioned: Option<((usize, bool, bool, u64), Tensor<4>)>,
}

/// A prompted frame's state for one object as a predictor left it: its clicks (model coordinates) and the
/// output they gave, not yet in the bank. [`VideoPredictor::restore_frame_prompt`] puts it in another
/// predictor, where the next click continues from it exactly as it would have in the first.
#[derive(Clone, Debug)]
pub struct FramePrompt {
    points: PointInputs,
    output: TrackOutput,
    is_cond: bool,
}

pub struct VideoPredictor<'a> {
    /// A clone of the caller's model (Burn modules share their parameter tensors: no weight is copied), so
    /// that a predictor can outlive the borrow it was made from (the page keeps a run for corrections).
    model: Sam2Base,
    frames: Box<dyn FrameSource + 'a>,
    objects: Vec<ObjectState>,
    /// The features of the most recently visited frame.
    cached: Option<(usize, ImageFeatures)>,
    /// Image-encoder runs so far (a frame is encoded once per visit, whatever the number of objects).
    frames_encoded: usize,
    /// The banks' policy: a cap on conditioning frames (see [`MemoryBank::set_max_conditioning`]) and which
    /// tracked memories are attended to.
    max_conditioning: Option<usize>,
    recent: RecentMemories,
    /// Meta's `add_all_frames_to_correct_as_cond`: clicks on a tracked frame make it a conditioning frame
    /// (off by default, as in Meta's builder; a correction is then tracked over by the next pass).
    add_all_frames_to_correct_as_cond: bool,
}

impl<'a> VideoPredictor<'a> {
    pub fn new(model: &Sam2Base, frames: Box<dyn FrameSource + 'a>) -> Self {
        Self {
            model: model.clone(),
            frames,
            objects: Vec::new(),
            cached: None,
            frames_encoded: 0,
            max_conditioning: None,
            recent: RecentMemories::Neighbours,
            add_all_frames_to_correct_as_cond: false,
        }
    }

    /// Meta's `add_all_frames_to_correct_as_cond`: with it, clicks on an already tracked frame (a correction)
    /// make that frame a conditioning frame, so that a propagation from it keeps and carries the correction
    /// (what Meta's web demo does); without it (the builder's default) the next pass tracks the frame again.
    pub fn set_add_all_frames_to_correct_as_cond(&mut self, on: bool) {
        self.add_all_frames_to_correct_as_cond = on;
    }

    /// Whether `object` has been tracked on `frame` and in which direction (`Some(reverse)`).
    pub fn tracked_direction(&self, frame: usize, object: usize) -> Option<bool> {
        self.objects.get(object)?.frames_tracked.get(&frame).copied()
    }

    pub fn model(&self) -> &Sam2Base {
        &self.model
    }

    /// How many times the image encoder ran.
    pub fn frames_encoded(&self) -> usize {
        self.frames_encoded
    }

    /// Every object's bank policy: at most `max_conditioning` conditioning frames (the temporally closest)
    /// in the memory attention instead of the config's `max_cond_frames_in_attn`, and which tracked
    /// memories a frame attends to.
    pub fn set_bank_policy(&mut self, max_conditioning: Option<usize>, recent: RecentMemories) {
        (self.max_conditioning, self.recent) = (max_conditioning, recent);
        for object in &mut self.objects {
            object.bank.set_max_conditioning(max_conditioning);
            object.bank.set_recent_memories(recent);
        }
    }

    /// Drops the tracked memories for which `keep(object, frame)` is false (a long volume keeps only what
    /// later frames can still select; an eviction policy keeps its choice).
    pub fn retain_tracked(&mut self, keep: impl Fn(usize, usize) -> bool) {
        for (index, object) in self.objects.iter_mut().enumerate() {
            object.bank.retain_tracked(|frame| keep(index, frame));
        }
    }

    pub fn num_frames(&self) -> usize {
        self.frames.num_frames()
    }

    pub fn object(&self, index: usize) -> Option<&ObjectState> {
        self.objects.get(index)
    }

    /// Frame `frame`'s clicks and output for `object`, while they are prompts (before a propagation).
    pub fn frame_prompt(&self, frame: usize, object: usize) -> Option<FramePrompt> {
        let state = self.objects.get(object)?;
        let points = state.point_inputs.get(&frame)?.clone();
        let (output, is_cond) = state.temp.get(&frame)?.clone();
        Some(FramePrompt { points, output, is_cond })
    }

    /// Forgets `object`'s prompts on `frame` not yet in the bank (a correction taken back): the frame is
    /// as the bank has it, and its next click starts from the bank's logits.
    pub fn discard_prompt(&mut self, frame: usize, object: usize) {
        if let Some(state) = self.objects.get_mut(object) {
            state.point_inputs.remove(&frame);
            state.mask_inputs.remove(&frame);
            state.temp.remove(&frame);
        }
    }

    /// Puts a [`FramePrompt`] taken from another predictor over the same frames (and model) on `frame`.
    pub fn restore_frame_prompt(&mut self, frame: usize, object: usize, prompt: FramePrompt) -> Result<(), String> {
        self.check_frame(frame)?;
        let state = self.object_mut(object);
        state.mask_inputs.remove(&frame);
        state.point_inputs.insert(frame, prompt.points);
        state.temp.insert(frame, (prompt.output, prompt.is_cond));
        Ok(())
    }

    fn object_mut(&mut self, index: usize) -> &mut ObjectState {
        if self.objects.len() <= index {
            let (max, recent) = (self.max_conditioning, self.recent);
            self.objects.resize_with(index + 1, || {
                let mut state = ObjectState::default();
                state.bank.set_max_conditioning(max);
                state.bank.set_recent_memories(recent);
                state
            });
        }
        &mut self.objects[index]
    }

    fn features(&mut self, frame: usize) -> Result<ImageFeatures, String> {
        if let Some((f, features)) = &self.cached {
            if *f == frame {
                return Ok(features.clone());
            }
        }
        let (features, encoded) = self.frames.features(&self.model, frame)?;
        self.frames_encoded += usize::from(encoded);
        self.cached = Some((frame, features.clone()));
        Ok(features)
    }

    fn check_frame(&self, frame: usize) -> Result<(), String> {
        let n = self.num_frames();
        if frame >= n {
            return Err(format!("frame {frame} is out of range: the sequence has {n} frames"));
        }
        Ok(())
    }

    /// `add_new_mask`: a 0/1 mask `[1, 1, H, W]` of the frame (any size; resized to the model's with
    /// antialiased bilinear and thresholded at 0.5 as Meta does). Returns the frame's output.
    pub fn add_new_mask(&mut self, frame: usize, object: usize, mask: Tensor<4>) -> Result<SamOutput, String> {
        self.check_frame(frame)?;
        let mask = mask_to_model_size(mask, self.model.image_size());
        let state = self.object_mut(object);
        state.point_inputs.remove(&frame);
        state.mask_inputs.insert(frame, mask.clone());
        self.run_prompt(frame, object, None, Some(mask), None)
    }

    /// `add_new_points_or_box`: clicks `[(x, y)]` in frame pixels of a `frame_size` = (width, height) frame
    /// with labels (1 positive, 0 negative), and optionally a box `[x0, y0, x1, y1]` (added first, as
    /// labels 2 and 3). With `clear_old_points` they replace the frame's earlier clicks, otherwise they are
    /// added to them (a box only comes with cleared clicks). Returns the frame's output.
    #[allow(clippy::too_many_arguments)]
    pub fn add_new_points_or_box(
        &mut self,
        frame: usize,
        object: usize,
        points: &[[f32; 2]],
        labels: &[i32],
        bbox: Option<[f32; 4]>,
        clear_old_points: bool,
        frame_size: [usize; 2],
    ) -> Result<SamOutput, String> {
        self.check_frame(frame)?;
        if points.len() != labels.len() {
            return Err(format!("{} points but {} labels", points.len(), labels.len()));
        }
        if points.is_empty() && bbox.is_none() {
            return Err("give at least one point or a box".into());
        }
        if bbox.is_some() && !clear_old_points {
            return Err("a box must come first: add it with the earlier clicks cleared".into());
        }
        let mut coords: Vec<[f32; 2]> = Vec::new();
        let mut all_labels: Vec<f32> = Vec::new();
        if let Some([x0, y0, x1, y1]) = bbox {
            coords.extend([[x0, y0], [x1, y1]]);
            all_labels.extend([2.0, 3.0]);
        }
        coords.extend_from_slice(points);
        all_labels.extend(labels.iter().map(|&l| l as f32));
        // Normalised by the frame size, then scaled to the model input (Meta's normalize_coords=True).
        let s = self.model.image_size() as f32;
        let [w, h] = frame_size;
        let flat: Vec<f32> = coords.iter().flat_map(|[x, y]| [x / w as f32 * s, y / h as f32 * s]).collect();
        let device = self.model.device();
        let n = all_labels.len();
        let mut inputs = PointInputs {
            coords: Tensor::from_data(burn::tensor::TensorData::new(flat, [1, n, 2]), &device),
            labels: Tensor::from_data(burn::tensor::TensorData::new(all_labels, [1, n]), &device),
        };
        let state = self.object_mut(object);
        if let Some(old) = state.point_inputs.get(&frame).filter(|_| !clear_old_points) {
            inputs = PointInputs {
                coords: Tensor::cat(vec![old.coords.clone(), inputs.coords], 1),
                labels: Tensor::cat(vec![old.labels.clone(), inputs.labels], 1),
            };
        }
        state.mask_inputs.remove(&frame);
        state.point_inputs.insert(frame, inputs.clone());
        // Clicks on a frame with an earlier output refine it: the earlier logits go in as a mask prompt.
        let prev = state
            .temp
            .get(&frame)
            .map(|(o, _)| o.sam.low_res_masks.clone())
            .or_else(|| state.bank.get(frame).map(|e| e.pred_masks.clone()))
            .map(|m| m.clamp(-32.0, 32.0));
        self.run_prompt(frame, object, Some(inputs), None, prev)
    }

    fn run_prompt(
        &mut self,
        frame: usize,
        object: usize,
        points: Option<PointInputs>,
        mask: Option<Tensor<4>>,
        prev_logits: Option<Tensor<4>>,
    ) -> Result<SamOutput, String> {
        let features = self.features(frame)?;
        let num_frames = self.num_frames();
        let correct_as_cond = self.add_all_frames_to_correct_as_cond;
        self.object_mut(object);
        let (model, state) = (&self.model, &mut self.objects[object]);
        // A frame not tracked yet starts the object there (like SAM on an image); a tracked frame is corrected.
        let is_init_cond_frame = !state.frames_tracked.contains_key(&frame);
        let reverse = state.frames_tracked.get(&frame).copied().unwrap_or(false);
        let out = match (mask, points) {
            (None, Some(points)) => {
                let key = (frame, reverse, is_init_cond_frame, state.bank.generation());
                let pix_feat = match &state.conditioned {
                    Some((k, pix)) if *k == key => pix.clone(),
                    _ => model.prepare_memory_conditioned_features(frame, is_init_cond_frame, &features, &state.bank, num_frames, reverse),
                };
                state.conditioned = Some((key, pix_feat.clone()));
                model.prompt_step(pix_feat, is_init_cond_frame, &features, &points, prev_logits)
            }
            (mask, points) => {
                model.track_step(frame, is_init_cond_frame, &features, points.as_ref(), mask, &state.bank, num_frames, reverse, false, prev_logits)
            }
        };
        let sam = out.sam.clone();
        let is_cond = is_init_cond_frame || correct_as_cond;
        state.temp.insert(frame, (out, is_cond));
        Ok(sam)
    }

    /// `propagate_in_video_preflight`: the prompted frames' memories are encoded and enter the banks, frame
    /// by frame so that a frame prompted for several objects is encoded once.
    fn preflight(&mut self) -> Result<(), String> {
        if self.objects.is_empty() {
            return Err("no object has a mask or clicks yet: add a prompt first".into());
        }
        let mut pending: Vec<(usize, usize, TrackOutput, bool)> = Vec::new();
        for (object, state) in self.objects.iter_mut().enumerate() {
            pending.extend(std::mem::take(&mut state.temp).into_iter().map(|(f, (out, cond))| (f, object, out, cond)));
        }
        pending.sort_by_key(|(frame, object, ..)| (*frame, *object));
        for (frame, object, mut out, is_cond) in pending {
            if out.maskmem_features.is_none() {
                let features = self.features(frame)?;
                out.maskmem_features = Some(self.model.encode_conditioning_memory(&features, &out.sam));
            }
            let entry = out.memory_entry().expect("memory encoded above");
            let bank = &mut self.objects[object].bank;
            if is_cond {
                bank.insert_conditioning(frame, entry);
            } else {
                bank.insert_tracked(frame, entry);
            }
        }
        match self.objects.iter().position(|o| o.bank.conditioning_frames().next().is_none()) {
            Some(object) => Err(format!("object {object} has no mask or clicks on any frame")),
            None => Ok(()),
        }
    }

    /// `propagate_in_video`: tracks every object from `start` (default: the first prompted frame) over at most
    /// `max_frames` frames (default: all) in one direction, calling `on_frame` with each frame's outputs
    /// (every object's) as soon as they are ready; `on_frame` returning false stops the run (cancel).
    pub fn propagate_in_video(
        &mut self,
        start: Option<usize>,
        max_frames: Option<usize>,
        reverse: bool,
        mut on_frame: impl FnMut(&[FrameOutput]) -> bool,
    ) -> Result<(), String> {
        for frame in self.begin_propagation(start, max_frames, reverse)? {
            if !on_frame(&self.track(frame, reverse)?) {
                break;
            }
        }
        Ok(())
    }

    /// The first half of `propagate_in_video`, for callers that step through the frames themselves (the
    /// session, the browser): runs the preflight and returns the frames to [`track`](Self::track) in order.
    pub fn begin_propagation(&mut self, start: Option<usize>, max_frames: Option<usize>, reverse: bool) -> Result<Vec<usize>, String> {
        self.preflight()?;
        let n = self.num_frames();
        let start = match start {
            Some(s) => s,
            None => self.first_conditioning_frame().expect("preflight checked"),
        };
        self.check_frame(start)?;
        let max = max_frames.unwrap_or(n);
        Ok(if reverse {
            let end = start.saturating_sub(max);
            if start > 0 { (end..=start).rev().collect() } else { Vec::new() }
        } else {
            (start..=(start + max).min(n - 1)).collect()
        })
    }

    /// The earliest frame with a prompt of any object, once prompts are in the banks (Meta's default start).
    pub fn first_conditioning_frame(&self) -> Option<usize> {
        self.objects.iter().flat_map(|o| o.bank.conditioning_frames()).min()
    }

    /// One frame of a propagation, every object's output (a frame is encoded once for all objects).
    pub fn track(&mut self, frame: usize, reverse: bool) -> Result<Vec<FrameOutput>, String> {
        self.check_frame(frame)?;
        let n = self.num_frames();
        (0..self.objects.len()).map(|object| self.track_frame(frame, object, reverse, n)).collect()
    }

    fn track_frame(&mut self, frame: usize, object: usize, reverse: bool, n: usize) -> Result<FrameOutput, String> {
        let state = &self.objects[object];
        if state.bank.is_conditioning(frame) {
            let e = state.bank.get(frame).expect("conditioning frame");
            let out = FrameOutput {
                frame,
                object,
                reverse,
                conditioning: true,
                pred_masks: e.pred_masks.clone(),
                object_score_logits: e.object_score_logits.clone(),
                obj_ptr: e.obj_ptr.clone(),
                iou_score: e.iou_score.clone(),
                maskmem_features: Some(e.maskmem_features.clone()),
                pix_feat_with_mem: None,
                held: state.bank.entries(),
                selection: None,
            };
            self.objects[object].frames_tracked.insert(frame, reverse);
            return Ok(out);
        }
        let features = self.features(frame)?;
        let (model, state) = (&self.model, &mut self.objects[object]);
        let held = state.bank.entries();
        // The same call `prepare_memory_conditioned_features` makes inside `track_step` on this bank (index
        // logic only: cheap), before the frame's own memory enters the bank.
        let selection = state.bank.select(frame, reverse, n, model.tracking_config());
        let out = model.track_step(frame, false, &features, None, None, &state.bank, n, reverse, true, None);
        state.bank.insert_tracked(frame, out.memory_entry().expect("memory encoder ran"));
        state.frames_tracked.insert(frame, reverse);
        Ok(FrameOutput {
            frame,
            object,
            reverse,
            conditioning: false,
            pred_masks: out.sam.low_res_masks,
            object_score_logits: out.sam.object_score_logits,
            obj_ptr: out.sam.obj_ptr,
            iou_score: out.sam.iou_score,
            maskmem_features: out.maskmem_features,
            pix_feat_with_mem: out.pix_feat_with_mem,
            held,
            selection: Some(selection),
        })
    }
}

/// A 0/1 mask `[1, 1, H, W]` at the model's size `[1, 1, S, S]`: antialiased bilinear, then >= 0.5 (as
/// Meta's `add_new_mask`).
pub fn mask_to_model_size(mask: Tensor<4>, size: usize) -> Tensor<4> {
    if mask.dims()[2..] == [size, size] {
        mask
    } else {
        interpolate::bilinear(mask, [size, size], true).greater_equal_elem(0.5).float()
    }
}
