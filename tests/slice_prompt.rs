//! Clicks and boxes on one slice (`src/session/slice_prompt.rs`), the page's instant feedback, on the reduced
//! SAM2.1 fixtures made by Meta's video predictor:
//! - a first single click gives Meta's chosen mask and SAM's three candidates with their predicted IoUs, a
//!   second click Meta's refined mask, a box Meta's box mask (1e-3 x std, as the video parity tests);
//! - a click continued from the previous feedback's state gives exactly the replay's mask;
//! - the feedback is exactly the label map a propagation conditioned on the same prompt gives that slice (the
//!   page's preview and the CLI's run agree voxel for voxel), and only the first prompt encodes the slice.

mod common;

use burn::tensor::{Device, Tensor};
use common::{VideoFixture, fixtures, frames_volume, max_abs_diff, std_dev, values};
use memseg::imaging::intensity::Intensity;
use memseg::job::{Finished, Job, Method, Outcome, Prompts, StepEvent};
use memseg::session::feature_cache::{self, FeatureCache};
use memseg::session::slice_prompt::{Click, SlicePrompt, at_slice_size, preview, preview_after};

const REL_TOL: f32 = 1e-3;

fn fixture(scenario: &str) -> VideoFixture {
    VideoFixture::open(&fixtures().join(format!("tiny21_reduced_128.{scenario}.video.safetensors")))
}

fn close<const D: usize>(what: &str, ours: &Tensor<D>, reference: Option<(Vec<usize>, Vec<f32>)>) {
    let (rshape, reference) = reference.unwrap_or_else(|| panic!("{what}: not in the fixture"));
    let (shape, ours) = values(ours);
    assert_eq!(shape, rshape, "{what}: shape");
    let err = max_abs_diff(&ours, &reference) / std_dev(&reference).max(1e-6);
    assert!(err <= REL_TOL, "{what}: off by {err:.2e} x std");
}

/// The fixture's prompts on one frame as one slice prompt (class 1), in Meta's call order.
fn slice_prompt(fx: &VideoFixture, calls: usize) -> SlicePrompt {
    let prompts = fx.meta["prompts"].as_array().unwrap();
    let frame = prompts[0]["frame"].as_u64().unwrap() as usize;
    let mut p = SlicePrompt { slice: frame, class: 1, bbox: None, clicks: Vec::new(), round: 0 };
    for q in &prompts[..calls] {
        if let Some(b) = q.get("box") {
            p.bbox = Some(serde_json::from_value(b.clone()).unwrap());
        }
        if let Some(points) = q.get("points") {
            let points: Vec<[f32; 2]> = serde_json::from_value(points.clone()).unwrap();
            let labels: Vec<i32> = serde_json::from_value(q["labels"].clone()).unwrap();
            p.clicks.extend(points.iter().zip(labels).map(|(&[x, y], l)| Click { x, y, positive: l == 1 }));
        }
    }
    p
}

#[test]
fn clicks_give_metas_masks_and_sams_candidates() {
    let fx = fixture("click");
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let cache = FeatureCache::shared(feature_cache::DEFAULT_BUDGET_BYTES);

    let first = slice_prompt(&fx, 1);
    let (out, encoded) = preview(&model, Some(&cache), &frames[first.slice], None, &first).unwrap();
    assert!(encoded, "the first prompt on a slice encodes it");
    close("first click: chosen mask", &out.low_res_masks, fx.tensor("prompt_out.0.pred_masks"));
    let candidates = out.candidates.expect("a single click on a fresh slice gives candidates");
    close("first click: candidates", &candidates.masks, fx.tensor("call.sam_mask_decoder.0.out.0"));
    close("first click: candidates' IoU", &candidates.ious, fx.tensor("call.sam_mask_decoder.0.out.1"));

    let both = slice_prompt(&fx, 2);
    let (out, encoded) = preview(&model, Some(&cache), &frames[both.slice], None, &both).unwrap();
    assert!(!encoded, "a later prompt only runs the prompt encoder and mask decoder");
    close("second click: refined mask", &out.low_res_masks, fx.tensor("prompt_out.1.pred_masks"));
    assert!(out.candidates.is_none(), "two clicks are not ambiguous");

    let fx = fixture("box");
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let bbox = slice_prompt(&fx, 1);
    let (out, encoded) = preview(&model, None, &frames[bbox.slice], None, &bbox).unwrap();
    assert!(encoded);
    close("box: mask", &out.low_res_masks, fx.tensor("prompt_out.0.pred_masks"));
}


#[test]
fn the_feedback_is_what_the_run_gives_the_prompted_slice() {
    let fx = fixture("click");
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let volume = frames_volume(&frames);
    let prompt = slice_prompt(&fx, 2);
    let (w, h) = frames[0].dimensions();

    let (out, _) = preview(&model, None, &frames[prompt.slice], None, &prompt).unwrap();
    let feedback: Vec<u8> = values(&at_slice_size(out.low_res_masks, w as usize, h as usize)).1.iter().map(|&v| u8::from(v > 0.0)).collect();
    assert!(feedback.contains(&1), "the click finds the shape");

    let prompts = Prompts { clicks: vec![prompt.clone()], ..Prompts::default() };
    let job = Job { volume: &volume, mapping: Intensity::Identity, truth: None, weights: "w".into(), method: Method::FewShot { model: &model, prompts } };
    let mut go_on = async |_: StepEvent<'_>| -> Result<bool, String> { Ok(true) };
    let Ok(Outcome::Done(Finished { labels, report, .. })) = pollster::block_on(job.run(&mut go_on, || 0.0)) else { panic!("the run finishes") };
    assert_eq!(labels[prompt.slice], feedback, "the run's label map of the prompted slice is the feedback's");
    let memseg::report::RunReport::FewShot(report) = report else { panic!() };
    assert_eq!((report.prompts, report.classes), (vec![prompt], vec![1]));
}

#[test]
fn a_painted_mask_goes_in_first_and_the_clicks_refine_it() {
    let fx = fixture("click");
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let prompt = slice_prompt(&fx, 1);
    let (w, h) = frames[0].dimensions();
    // A painted square of class 1 away from the click, and class 2 elsewhere (not this prompt's class).
    let painted = image::GrayImage::from_fn(w, h, |x, y| image::Luma([if x < 20 && y < 20 { 1 } else if x > 120 { 2 } else { 0 }]));
    let (clicked, _) = preview(&model, None, &frames[prompt.slice], None, &prompt).unwrap();
    let (refined, _) = preview(&model, None, &frames[prompt.slice], Some(&painted), &prompt).unwrap();
    assert_ne!(values(&refined.low_res_masks).1, values(&clicked.low_res_masks).1, "the painted mask is the click's mask prompt");
    let other = image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x > 120 { 2 } else { 0 }]));
    let (unrelated, _) = preview(&model, None, &frames[prompt.slice], Some(&other), &prompt).unwrap();
    assert_eq!(values(&unrelated.low_res_masks).1, values(&clicked.low_res_masks).1, "another class's paint is not this prompt's");
    let bad = SlicePrompt { clicks: vec![Click { x: w as f32, y: 1.0, positive: true }], ..prompt.clone() };
    assert!(preview(&model, None, &frames[prompt.slice], None, &bad).unwrap_err().contains("not inside"));
    let painted_small = image::GrayImage::from_fn(w / 2, h, |_, _| image::Luma([1]));
    assert!(preview(&model, None, &frames[prompt.slice], Some(&painted_small), &prompt).unwrap_err().contains("painted mask"));
}

#[test]
fn a_click_continued_from_the_last_feedback_is_the_replay() {
    let fx = fixture("click");
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let cache = FeatureCache::shared(feature_cache::DEFAULT_BUDGET_BYTES);
    let (one, both) = (slice_prompt(&fx, 1), slice_prompt(&fx, 2));
    let image = &frames[one.slice];
    let (_, _, memo) = preview_after(&model, Some(&cache), image, None, &one, None).unwrap();
    let (continued, encoded, memo) = preview_after(&model, Some(&cache), image, None, &both, Some(&memo)).unwrap();
    assert!(!encoded);
    let (replayed, _) = preview(&model, Some(&cache), image, None, &both).unwrap();
    assert_eq!(values(&continued.low_res_masks).1, values(&replayed.low_res_masks).1, "continuing == replaying, bit for bit");
    close("continued second click", &continued.low_res_masks, fx.tensor("prompt_out.1.pred_masks"));
    // A click taken back, another class, or another painted mask: the memo does not apply, the prompt replays.
    let (undone, _, _) = preview_after(&model, Some(&cache), image, None, &one, Some(&memo)).unwrap();
    let (first, _) = preview(&model, Some(&cache), image, None, &one).unwrap();
    assert_eq!(values(&undone.low_res_masks).1, values(&first.low_res_masks).1);
    let (w, h) = image.dimensions();
    let painted = image::GrayImage::from_fn(w, h, |x, y| image::Luma([u8::from(x < 20 && y < 20)]));
    let (on_paint, _, _) = preview_after(&model, Some(&cache), image, Some(&painted), &both, Some(&memo)).unwrap();
    let (on_paint_replayed, _) = preview(&model, Some(&cache), image, Some(&painted), &both).unwrap();
    assert_eq!(values(&on_paint.low_res_masks).1, values(&on_paint_replayed.low_res_masks).1);
}
