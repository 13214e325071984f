//! Clicks and boxes on a query slice, SAM's prompts: what a user gives to see a mask at once, and what then
//! conditions a propagation the way Meta's video predictor treats a frame with points or a box (not as a
//! painted mask).
//!
//! A slice's prompt for one class is replayed in a fixed order through `add_new_points_or_box`: the box first
//! (Meta's rule: a box comes with the earlier clicks cleared), then each click on its own call, appended to
//! the ones before. Each call after the first takes the previous output's logits as its mask prompt, as when
//! a user clicks one point after another; so the page (one call per click, feedback after each) and the CLI
//! (the whole list at once) give the same mask. A mask painted for the same class on the same slice goes in
//! first: the clicks then refine it.
//!
//! Rounds, as a user works: prompts of round 0 come before the first propagation (each prompted slice is
//! SAM's answer on that slice alone); a prompt of round `r >= 1` is a correction made after `r` rounds of
//! propagation, on a slice they tracked. It goes through the same calls, but on the tracked slice, so it
//! attends to the memory bank and starts from the tracked mask, and the slice becomes a conditioning frame
//! (Meta's `add_all_frames_to_correct_as_cond`, as in Meta's web demo); the volume is then tracked again from
//! the corrected slices outwards (`propagate.rs`).

use burn::tensor::Tensor;
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use super::feature_cache::{Key, SharedFeatureCache, encode};
use super::{Session, class_mask, has_class};
use crate::sam2::sam2_base::{ImageFeatures, SamOutput};
use crate::sam2::video_predictor::{FramePrompt, FrameSource, VideoPredictor};
use crate::sam2::Sam2Base;

/// Most clicks on one slice for one class (Meta's demo caps nothing; this keeps a prompt's replay short).
pub const MAX_CLICKS: usize = 64;

/// One click in the slice's pixels: on the object (`positive`) or on the background.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Click {
    pub x: f32,
    pub y: f32,
    pub positive: bool,
}

/// A class's box and clicks on one query slice, in the slice's pixels: x right, y down, (0, 0) the top-left
/// pixel, scaled by the slice's size to the model's input as Meta's `normalize_coords` does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlicePrompt {
    pub slice: usize,
    pub class: u8,
    /// `[x0, y0, x1, y1]`, top-left and bottom-right corners.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clicks: Vec<Click>,
    /// 0: given before the first propagation; `r >= 1`: a correction after `r` rounds (see the module).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: usize,
}

fn is_zero(round: &usize) -> bool {
    *round == 0
}

impl SlicePrompt {
    /// Refuses what Meta's predictor would take but no user means: nothing given, a point off the slice, an
    /// empty or inverted box, too many clicks. `width` and `height` are the slice's.
    pub fn check(&self, width: usize, height: usize) -> Result<(), String> {
        let at = format!("slice {}, class {}", self.slice, self.class);
        if self.bbox.is_none() && self.clicks.is_empty() {
            return Err(format!("{at}: give a box or at least one click"));
        }
        if self.clicks.len() > MAX_CLICKS {
            return Err(format!("{at}: {} clicks; at most {MAX_CLICKS} on one slice for one class", self.clicks.len()));
        }
        let (w, h) = (width as f32, height as f32);
        // A click is on a pixel (0 <= x < width); a box's corners may lie on the slice's far edges.
        let on_pixel = |x: f32, y: f32| (0.0..w).contains(&x) && (0.0..h).contains(&y);
        let on_slice = |x: f32, y: f32| (0.0..=w).contains(&x) && (0.0..=h).contains(&y);
        if let Some([x0, y0, x1, y1]) = self.bbox {
            if !on_slice(x0, y0) || !on_slice(x1, y1) {
                return Err(format!("{at}: the box [{x0}, {y0}, {x1}, {y1}] is not inside the {width}x{height} slice"));
            }
            if x1 <= x0 || y1 <= y0 {
                return Err(format!("{at}: the box [{x0}, {y0}, {x1}, {y1}] is empty or inverted (give x0 < x1 and y0 < y1)"));
            }
        }
        if let Some(c) = self.clicks.iter().find(|c| !on_pixel(c.x, c.y)) {
            return Err(format!("{at}: the click ({}, {}) is not inside the {width}x{height} slice", c.x, c.y));
        }
        Ok(())
    }

    /// Whether `next` is this prompt with one or more clicks added (same slice, class and box).
    pub(super) fn continued_by(&self, next: &SlicePrompt) -> bool {
        (self.slice, self.class, self.bbox, self.round) == (next.slice, next.class, next.bbox, next.round)
            && next.clicks.len() > self.clicks.len()
            && next.clicks.starts_with(&self.clicks)
    }

    /// Replays the prompt on `frame` for `object` (see the module's order); returns the last call's output.
    pub fn apply(&self, predictor: &mut VideoPredictor, frame: usize, object: usize, frame_size: [usize; 2]) -> Result<SamOutput, String> {
        let mut out = None;
        if let Some(b) = self.bbox {
            out = Some(predictor.add_new_points_or_box(frame, object, &[], &[], Some(b), true, frame_size)?);
        }
        self.apply_clicks(predictor, frame, object, frame_size, 0)?.or(out).ok_or_else(|| format!("slice {}, class {}: give a box or at least one click", self.slice, self.class))
    }

    /// The clicks from the `from`-th on, each its own call appended to the frame's earlier ones (the first
    /// click of a prompt without a box clears the frame's clicks); the last call's output, if any click ran.
    pub(super) fn apply_clicks(&self, predictor: &mut VideoPredictor, frame: usize, object: usize, frame_size: [usize; 2], from: usize) -> Result<Option<SamOutput>, String> {
        let mut out = None;
        for (i, c) in self.clicks.iter().enumerate().skip(from) {
            let clear = i == 0 && self.bbox.is_none();
            out = Some(predictor.add_new_points_or_box(frame, object, &[[c.x, c.y]], &[i32::from(c.positive)], None, clear, frame_size)?);
        }
        Ok(out)
    }
}

/// One slice as a video of one frame, its features through the feature cache.
struct OneSlice<'a> {
    image: &'a RgbImage,
    cache: Option<&'a SharedFeatureCache>,
}

impl FrameSource for OneSlice<'_> {
    fn num_frames(&self) -> usize {
        1
    }

    fn frame(&self, _: usize) -> Result<Tensor<4>, String> {
        Err("the slice's features come from `features`".into())
    }

    fn features(&self, model: &Sam2Base, _: usize) -> Result<(ImageFeatures, bool), String> {
        Ok(encode(model, self.cache, self.image))
    }
}

/// What a slice's prompt gives at once (the page's feedback): the output a propagation conditioned on it gets
/// for that slice, computed alone. `painted` is the slice's drawn label map, whose mask of the prompt's class
/// goes in first as in the run. The first prompt on a slice encodes it (kept in `cache`); later ones only run
/// the prompt encoder and mask decoder, once per click. Returns the output and whether the encoder ran.
pub fn preview(
    model: &Sam2Base,
    cache: Option<&SharedFeatureCache>,
    image: &RgbImage,
    painted: Option<&GrayImage>,
    prompt: &SlicePrompt,
) -> Result<(SamOutput, bool), String> {
    preview_after(model, cache, image, painted, prompt, None).map(|(out, encoded, _)| (out, encoded))
}

/// What a slice's feedback leaves for the next click on it ([`preview_after`]).
pub struct PromptMemo {
    prompt: SlicePrompt,
    image: Key,
    /// The painted mask of the prompt's class that went in first, if any (0/1).
    painted: Option<Vec<u8>>,
    state: FramePrompt,
}

/// [`preview`], continuing from `last` (the previous feedback on this slice) when `prompt` is `last`'s with
/// clicks added: those clicks alone run, from the state the earlier ones left, so a click costs one prompt
/// encoder and mask decoder run however many came before. The result is the replay's: the same calls on
/// the same state. Anything else (another slice, class, box or painted mask, a click taken back) replays
/// the prompt. `last` must come from the same model. Returns the output, whether the encoder ran, and the memo
/// for the next click.
pub fn preview_after(
    model: &Sam2Base,
    cache: Option<&SharedFeatureCache>,
    image: &RgbImage,
    painted: Option<&GrayImage>,
    prompt: &SlicePrompt,
    last: Option<&PromptMemo>,
) -> Result<(SamOutput, bool, PromptMemo), String> {
    let (w, h) = image.dimensions();
    prompt.check(w as usize, h as usize)?;
    if let Some(labels) = painted.filter(|l| l.dimensions() != (w, h)) {
        return Err(format!("the painted mask is {}x{} but the slice is {w}x{h}", labels.width(), labels.height()));
    }
    let painted = painted.filter(|l| has_class(l, prompt.class));
    let painted_bits = painted.map(|l| l.pixels().map(|p| u8::from(p[0] == prompt.class)).collect::<Vec<u8>>());
    let key = Key::of(image, model.image_size());
    let mut predictor = VideoPredictor::new(model, Box::new(OneSlice { image, cache }));
    let size = [w as usize, h as usize];
    let continued = last.filter(|m| m.image == key && m.painted == painted_bits && m.prompt.continued_by(prompt));
    let out = match continued {
        Some(memo) => {
            predictor.restore_frame_prompt(0, 0, memo.state.clone())?;
            prompt.apply_clicks(&mut predictor, 0, 0, size, memo.prompt.clicks.len())?.ok_or("no click to continue with")?
        }
        None => {
            if let Some(labels) = painted {
                predictor.add_new_mask(0, 0, class_mask(labels, prompt.class, &model.device()))?;
            }
            prompt.apply(&mut predictor, 0, 0, size)?
        }
    };
    let state = predictor.frame_prompt(0, 0).ok_or("the prompt left no state")?;
    let memo = PromptMemo { prompt: prompt.clone(), image: key, painted: painted_bits, state };
    Ok((out, predictor.frames_encoded() > 0, memo))
}

/// Low-resolution logits `[1, M, S/4, S/4]` at a slice's size `[1, M, height, width]` (bilinear, as the run's
/// outputs): > 0 is the object.
pub fn at_slice_size(logits: Tensor<4>, width: usize, height: usize) -> Tensor<4> {
    crate::sam2::interpolate::bilinear(logits, [height, width], false)
}

/// `memseg segment --points` and `--box` values: `INDEX[:CLASS][@ROUND]=...` (class 1 and round 0 when left
/// out).
impl SlicePrompt {
    /// `INDEX[:CLASS][@ROUND]=X,Y,LABEL[;X,Y,LABEL...]`, LABEL 1 for the object and 0 for the background.
    pub fn parse_points(spec: &str) -> Result<Self, String> {
        let (mut prompt, values) = Self::parse_target(spec, "INDEX[:CLASS][@ROUND]=X,Y,LABEL[;X,Y,LABEL...]")?;
        for click in values.split(';') {
            let [x, y, label] = numbers::<3>(click).map_err(|e| format!("click '{click}': {e} (expected X,Y,LABEL)"))?;
            let positive = match label {
                1.0 => true,
                0.0 => false,
                _ => return Err(format!("click '{click}': the label is {label}; 1 marks the object, 0 the background")),
            };
            prompt.clicks.push(Click { x, y, positive });
        }
        Ok(prompt)
    }

    /// `INDEX[:CLASS][@ROUND]=X0,Y0,X1,Y1`.
    pub fn parse_box(spec: &str) -> Result<Self, String> {
        let (mut prompt, values) = Self::parse_target(spec, "INDEX[:CLASS][@ROUND]=X0,Y0,X1,Y1")?;
        prompt.bbox = Some(numbers::<4>(values).map_err(|e| format!("box '{values}': {e} (expected X0,Y0,X1,Y1)"))?);
        Ok(prompt)
    }

    /// The slice, class and round before `=`, and what follows it.
    fn parse_target<'a>(spec: &'a str, form: &str) -> Result<(Self, &'a str), String> {
        let (target, values) = spec.split_once('=').ok_or_else(|| format!("expected {form}"))?;
        let (target, round) = target.split_once('@').unwrap_or((target, "0"));
        let round = round.trim().parse().map_err(|_| format!("round '{round}': expected 0, 1, 2..."))?;
        let (index, class) = target.split_once(':').unwrap_or((target, "1"));
        let slice = index.trim().parse().map_err(|e| format!("slice index '{index}': {e}"))?;
        let class = match class.trim().parse::<u8>() {
            Ok(c) if c > 0 => c,
            _ => return Err(format!("class '{class}': expected a label value 1..=255")),
        };
        Ok((Self { slice, class, bbox: None, clicks: Vec::new(), round }, values))
    }
}

/// Exactly `N` comma-separated finite numbers.
fn numbers<const N: usize>(text: &str) -> Result<[f32; N], String> {
    let values: Vec<f32> = text.split(',').map(|v| v.trim().parse::<f32>().map_err(|_| format!("'{}' is not a number", v.trim()))).collect::<Result<_, _>>()?;
    let values: [f32; N] = values.try_into().map_err(|v: Vec<f32>| format!("{} numbers where {N} are needed", v.len()))?;
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(format!("{v} is not a finite number")),
        None => Ok(values),
    }
}

impl Session {
    /// Clicks and a box on query slice `prompt.slice` for one of the session's classes: that slice becomes a
    /// conditioning frame for the class ([`super::Mode::Propagate`]), from the start (round 0) or as a
    /// correction after `prompt.round` rounds of propagation. A second prompt for the same slice, class and
    /// round adds its clicks after the first's (and may give the box if the first had none).
    pub fn add_query_prompt(&mut self, prompt: SlicePrompt) -> Result<(), String> {
        let image = self.query_slice(prompt.slice, &format!("the prompt on slice {}", prompt.slice))?;
        let (w, h) = image.dimensions();
        prompt.check(w as usize, h as usize)?;
        if !self.classes.contains(&prompt.class) {
            return Err(format!("slice {}: a prompt for class {}, which is not among the classes {:?}", prompt.slice, prompt.class, self.classes));
        }
        let same = |p: &&mut SlicePrompt| (p.slice, p.class, p.round) == (prompt.slice, prompt.class, prompt.round);
        match self.query_prompts.iter_mut().find(same) {
            None => self.query_prompts.push(prompt),
            Some(p) if p.bbox.is_some() && prompt.bbox.is_some() => {
                return Err(format!("slice {}, class {}: one box per slice and class", prompt.slice, prompt.class));
            }
            Some(p) => {
                p.bbox = p.bbox.or(prompt.bbox);
                p.clicks.extend(prompt.clicks);
                p.check(w as usize, h as usize)?;
            }
        }
        Ok(())
    }

    /// The highest round among the prompts (0 without corrections).
    pub fn last_round(&self) -> usize {
        self.query_prompts.iter().map(|p| p.round).max().unwrap_or(0)
    }

    /// Whether `class` has a mask or a prompt to start from (supports, drawn masks, clicks and boxes of round
    /// 0): a correction needs a tracked mask to correct.
    pub(super) fn class_is_given(&self, class: u8) -> bool {
        self.supports.iter().any(|s| has_class(&s.labels, class))
            || self.query_masks.iter().any(|(_, l)| has_class(l, class))
            || self.query_prompts.iter().any(|p| p.class == class && p.round == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(bbox: Option<[f32; 4]>, clicks: &[(f32, f32, bool)]) -> SlicePrompt {
        let clicks = clicks.iter().map(|&(x, y, positive)| Click { x, y, positive }).collect();
        SlicePrompt { slice: 2, class: 1, bbox, clicks, round: 0 }
    }

    #[test]
    fn a_prompt_must_lie_on_the_slice_and_give_something() {
        assert!(prompt(Some([1.0, 2.0, 32.0, 48.0]), &[(5.0, 5.0, true), (0.0, 47.5, false)]).check(32, 48).is_ok());
        let err = |p: SlicePrompt| p.check(32, 48).unwrap_err();
        assert!(err(prompt(None, &[])).contains("give a box or at least one click"));
        assert!(err(prompt(None, &[(32.0, 5.0, true)])).contains("(32, 5) is not inside the 32x48 slice"));
        assert!(err(prompt(None, &[(-1.0, 5.0, true)])).contains("not inside"));
        assert!(err(prompt(None, &[(f32::NAN, 5.0, true)])).contains("not inside"));
        assert!(err(prompt(Some([10.0, 2.0, 10.0, 40.0]), &[])).contains("empty or inverted"));
        assert!(err(prompt(Some([20.0, 2.0, 10.0, 40.0]), &[])).contains("empty or inverted"));
        assert!(err(prompt(Some([1.0, 2.0, 30.0, 48.5]), &[])).contains("not inside"));
        let many = vec![(1.0, 1.0, true); MAX_CLICKS + 1];
        assert!(err(prompt(None, &many)).contains("at most 64"));
    }

    #[test]
    fn the_cli_forms_parse_and_bad_ones_say_why() {
        let p = SlicePrompt::parse_points("2=5,6,1;7.5,8,0").unwrap();
        assert_eq!(p, prompt(None, &[(5.0, 6.0, true), (7.5, 8.0, false)]));
        let b = SlicePrompt::parse_box("12:3=1,2,30,40").unwrap();
        assert_eq!((b.slice, b.class, b.bbox, b.clicks.len()), (12, 3, Some([1.0, 2.0, 30.0, 40.0]), 0));
        let err = |r: Result<SlicePrompt, String>| r.unwrap_err();
        let c = SlicePrompt::parse_points("7:2@1=5,6,0").unwrap();
        assert_eq!((c.slice, c.class, c.round), (7, 2, 1));
        assert!(err(SlicePrompt::parse_points("7@x=5,6,0")).contains("round 'x'"));
        assert!(err(SlicePrompt::parse_points("7@-1=5,6,0")).contains("round '-1'"));
        assert!(err(SlicePrompt::parse_points("2:5,6,1")).contains("expected INDEX[:CLASS][@ROUND]="));
        assert!(err(SlicePrompt::parse_points("x=5,6,1")).contains("slice index 'x'"));
        assert!(err(SlicePrompt::parse_points("2:0=5,6,1")).contains("class '0'"));
        assert!(err(SlicePrompt::parse_points("2=5,6,2")).contains("the label is 2"));
        assert!(err(SlicePrompt::parse_points("2=5,6")).contains("2 numbers where 3 are needed"));
        assert!(err(SlicePrompt::parse_points("2=5,six,1")).contains("'six' is not a number"));
        assert!(err(SlicePrompt::parse_points("2=5,inf,1")).contains("not a finite number"));
        assert!(err(SlicePrompt::parse_box("2=1,2,3")).contains("3 numbers where 4 are needed"));
    }

    #[test]
    fn prompts_read_and_write_as_the_page_sends_them() {
        let p: SlicePrompt = serde_json::from_str(r#"{"slice":2,"class":1,"box":[1,2,30,40],"clicks":[{"x":5,"y":6,"positive":false}]}"#).unwrap();
        assert_eq!(p, prompt(Some([1.0, 2.0, 30.0, 40.0]), &[(5.0, 6.0, false)]));
        assert_eq!(serde_json::to_value(prompt(None, &[(5.0, 6.0, true)])).unwrap(), serde_json::json!({"slice":2,"class":1,"clicks":[{"x":5.0,"y":6.0,"positive":true}]}));
        assert!(serde_json::from_str::<SlicePrompt>(r#"{"slice":2,"class":1,"clicks":[{"x":5,"y":6,"positive":2}]}"#).is_err());
        let c: SlicePrompt = serde_json::from_str(r#"{"slice":2,"class":1,"round":2,"clicks":[{"x":5,"y":6,"positive":true}]}"#).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap()["round"], 2);
    }
}
