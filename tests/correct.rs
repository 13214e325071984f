//! Corrections after a run (`src/session/correct.rs`, `job::resume`), as the page makes them: a finished
//! propagation takes clicks on slices it tracked, each click's mask comes at once, then the volume is tracked
//! again from the corrected slices. On Meta's `correct` fixture (a mask on frame 3, both passes; then clicks
//! on frames 1 and 4 with `add_all_frames_to_correct_as_cond`, propagated from each):
//! - each correction's mask equals Meta's `add_new_points_or_box` output (1e-3 x std), a click added to the
//!   last one continuing from it, a prompt that is not a continuation starting again from the tracked mask;
//! - tracking again computes only the slices from the corrected ones outwards, and the labels, order and
//!   prompts equal a job given every round at once (the CLI's `INDEX@ROUND`), bit for bit;
//! - a correction of the wrong round, for a class the run did not segment, or off the slice is refused, and
//!   leaves the run as it was.

mod common;

use burn::tensor::Device;
use common::{VideoFixture, fixtures, frames_volume, max_abs_diff, std_dev, values};
use memseg::imaging::intensity::Intensity;
use memseg::job::{self, DrawnMask, Finished, Job, Method, Outcome, Prompts, StepEvent};
use memseg::report::RunReport;
use memseg::session::slice_prompt::{Click, SlicePrompt};

fn fixture() -> VideoFixture {
    VideoFixture::open(&fixtures().join("tiny21_reduced_128.correct.video.safetensors"))
}

/// The fixture's click calls of round 1, one `(fixture prompt index, slice, click)` each, in Meta's order.
fn correction_clicks(fx: &VideoFixture) -> Vec<(usize, usize, Click)> {
    let prompts = fx.meta["prompts"].as_array().unwrap();
    let mut out = Vec::new();
    for (i, p) in prompts.iter().enumerate().filter(|(_, p)| p["kind"] == "points") {
        let [x, y] = serde_json::from_value::<Vec<[f32; 2]>>(p["points"].clone()).unwrap()[0];
        let positive = p["labels"][0].as_i64().unwrap() == 1;
        out.push((i, p["frame"].as_u64().unwrap() as usize, Click { x, y, positive }));
    }
    out
}

/// The corrections as whole prompts per slice (what the CLI and a run from scratch take).
fn correction_prompts(fx: &VideoFixture) -> Vec<SlicePrompt> {
    let mut prompts: Vec<SlicePrompt> = Vec::new();
    for (_, slice, click) in correction_clicks(fx) {
        match prompts.iter_mut().find(|p| p.slice == slice) {
            Some(p) => p.clicks.push(click),
            None => prompts.push(SlicePrompt { slice, class: 1, bbox: None, clicks: vec![click], round: 1 }),
        }
    }
    prompts
}

fn job_prompts(fx: &VideoFixture, clicks: Vec<SlicePrompt>, keep_for_corrections: bool) -> Prompts {
    let drawn = vec![DrawnMask { slice: 3, name: "frame 3".into(), labels: fx.mask_labels(3) }];
    Prompts { drawn, clicks, keep_for_corrections, ..Prompts::default() }
}

fn finish(outcome: Outcome<Finished>) -> Finished {
    match outcome {
        Outcome::Done(f) => f,
        Outcome::Cancelled { .. } => panic!("not cancelled"),
    }
}

fn few_shot(report: &RunReport) -> serde_json::Value {
    match report {
        RunReport::FewShot(r) => serde_json::to_value(r).unwrap(),
        RunReport::PromptFree(_) => panic!("a few-shot report"),
    }
}

/// A correction's mask against Meta's output of that call.
fn assert_close(fx: &VideoFixture, index: usize, ours: &burn::tensor::Tensor<4>) {
    let (_, reference) = fx.tensor(&format!("prompt_out.{index}.pred_masks")).unwrap();
    let err = max_abs_diff(&values(ours).1, &reference) / std_dev(&reference);
    assert!(err <= 1e-3, "prompt {index}: off by {err:.2e} x std");
}

#[test]
fn corrections_after_a_run_match_meta_and_a_run_given_every_round() {
    let fx = fixture();
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let volume = frames_volume(&frames);
    let job = |prompts| Job { volume: &volume, mapping: Intensity::Identity, truth: None, weights: "fixture".into(), method: Method::FewShot { model: &model, prompts } };
    let mut ignore = async |_: StepEvent<'_>| Ok(true);

    // Every round at once (as `memseg segment --points 1@1=... --points 4@1=...`).
    let all_at_once = finish(pollster::block_on(job(job_prompts(&fx, correction_prompts(&fx), false)).run(&mut ignore, || 0.0)).unwrap());
    assert!(all_at_once.corrections.is_none(), "kept only when asked");

    // Round 0, kept for corrections; then the clicks one by one, as the page sends them.
    let first = finish(pollster::block_on(job(job_prompts(&fx, Vec::new(), true)).run(&mut ignore, || 0.0)).unwrap());
    let mut kept = first.corrections.expect("a propagation kept for corrections");
    assert_eq!(kept.correctable.round(), 1);
    let c = &mut kept.correctable;
    let mut on_slice: Vec<SlicePrompt> = Vec::new();
    for (index, slice, click) in correction_clicks(&fx) {
        let prompt = match on_slice.iter_mut().find(|p| p.slice == slice) {
            Some(p) => {
                p.clicks.push(click);
                p.clone()
            }
            None => {
                // Not a continuation of anything: first a wrong click there, then the real one from scratch.
                let wrong = SlicePrompt { slice, class: 1, bbox: None, clicks: vec![Click { x: 2.0, y: 2.0, positive: true }], round: 1 };
                c.correct(&wrong).unwrap();
                on_slice.push(SlicePrompt { clicks: vec![click], ..wrong });
                on_slice.last().unwrap().clone()
            }
        };
        assert_close(&fx, index, &c.correct(&prompt).unwrap().low_res_masks);
    }

    // Refused, nothing changed.
    let base = on_slice[0].clone();
    let refused = |c: &mut memseg::session::Correctable, p: SlicePrompt, what: &str| {
        let err = c.correct(&p).unwrap_err();
        assert!(err.contains(what), "{err}");
    };
    refused(c, SlicePrompt { round: 2, ..base.clone() }, "round 2 given to a run expecting round 1");
    refused(c, SlicePrompt { class: 9, ..base.clone() }, "class 9, which the run did not segment");
    refused(c, SlicePrompt { clicks: vec![Click { x: 1e4, y: 1.0, positive: true }], ..base.clone() }, "not inside");
    assert_eq!(c.pending(), on_slice);

    // Tracking again: only the slices from the corrected ones outwards, Meta's round-1 order.
    let mut slices = Vec::new();
    let mut record = async |e: StepEvent<'_>| {
        slices.push(e.slice);
        Ok(true)
    };
    let again = finish(pollster::block_on(job::resume(kept, first.labels, &volume, None, &mut record, || 0.0)).unwrap());
    let round1: Vec<usize> = fx.meta["passes"].as_array().unwrap().iter().filter(|p| p["round"] == 1)
        .flat_map(|p| serde_json::from_value::<Vec<usize>>(p["order"].clone()).unwrap()).collect();
    assert_eq!(slices, round1, "re-tracked slices");
    assert_eq!(again.steps, round1.len());
    assert!(again.labels == all_at_once.labels, "the same labels as a run given every round");
    let (a, b) = (few_shot(&again.report), few_shot(&all_at_once.report));
    for key in ["order", "prompts", "per_class", "classes"] {
        assert_eq!(a[key], b[key], "report's {key}");
    }
    assert_eq!(again.corrections.expect("still correctable").correctable.round(), 2);
}
