//! The volume job (`src/job.rs`), the driver the CLI, `memseg eval` and the page share, on the reduced SAM2.1
//! fixture model and frames: it gives exactly the session's label maps with one event per step, reports what it
//! was given, stops when its callback says so, refuses a job with no prompt, and re-runs through the feature
//! cache without encoding a slice twice.

mod common;

use burn::tensor::Device;
use common::{VideoFixture, fixtures, frames_volume};
use image::RgbImage;
use memseg::imaging::Volume;
use memseg::imaging::intensity::{self, Intensity};
use memseg::job::{DrawnMask, Finished, Job, Method, Outcome, Prompts, StepEvent};
use memseg::report::RunReport;
use memseg::session::feature_cache::{self, FeatureCache};
use memseg::session::{MemoryOptions, Mode, Placement, Session, label_map, read_f32};

fn fixture() -> VideoFixture {
    VideoFixture::open(&fixtures().join("tiny21_reduced_128.mid.video.safetensors"))
}

/// The fixture's mask on frame 3 as label 1.
fn mask(fx: &VideoFixture) -> image::GrayImage {
    fx.mask_labels(3)
}

fn prompts(fx: &VideoFixture, drawn_as_supports: bool) -> Prompts {
    Prompts { drawn: vec![DrawnMask { slice: 3, name: "frame 3".into(), labels: mask(fx) }], drawn_as_supports, ..Prompts::default() }
}

fn volume(frames: &[RgbImage]) -> memseg::imaging::Volume {
    frames_volume(frames)
}

/// The fixture, its model on Flex, its frames and the frames as a volume.
fn setup() -> (VideoFixture, memseg::sam2::Sam2Base, Vec<RgbImage>, Volume) {
    let fx = fixture();
    let model = fx.model(&Device::flex());
    let frames = fx.frames_rgb();
    let volume = volume(&frames);
    (fx, model, frames, volume)
}

/// Runs a job with a callback that records every event and answers `go_on(step)`.
fn run(job: Job, go_on: impl Fn(usize) -> bool) -> (Outcome<Finished>, Vec<(usize, usize, usize, bool, Vec<u8>)>) {
    let mut events = Vec::new();
    let mut on_step = async |e: StepEvent<'_>| {
        assert!(e.bank.is_some(), "a few-shot step carries its bank snapshot");
        events.push((e.step, e.total, e.slice, e.reverse, e.labels.to_vec()));
        Ok(go_on(e.step))
    };
    let outcome = pollster::block_on(job.run(&mut on_step, || 1.5)).unwrap();
    (outcome, events)
}

#[test]
fn a_job_gives_the_sessions_labels_one_event_per_step() {
    let (fx, model, frames, volume) = setup();
    let (w, h) = frames[0].dimensions();

    // The session driven by hand: what the job must give.
    let mut session = Session::new(frames.clone(), vec![1]).unwrap();
    session.add_query_mask(3, "frame 3", mask(&fx)).unwrap();
    let mut expected = vec![Vec::new(); frames.len()];
    let mut order = Vec::new();
    let mut hand = pollster::block_on(session.start(&model, Mode::Propagate(Placement::Middle), MemoryOptions::default())).unwrap();
    while let Some(out) = pollster::block_on(hand.step()) {
        let out = out.unwrap();
        let values = pollster::block_on(read_f32(out.at_size(h as usize, w as usize))).unwrap();
        expected[out.slice] = label_map(&[values], &[1]);
        order.push(out.slice);
    }

    let job = Job {
        volume: &volume,
        mapping: intensity::choose(&volume, None).unwrap(),
        truth: None,
        weights: "reduced".into(),
        method: Method::FewShot { model: &model, prompts: prompts(&fx, false) },
    };
    assert_eq!(job.mapping, Intensity::Identity, "8-bit slices are used as they are");
    let (outcome, events) = run(job, |_| true);
    let Outcome::Done(finished) = outcome else { panic!("the callback never stopped the job") };
    assert_eq!(finished.labels, expected, "the session's label maps, slice by slice");
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=order.len()).collect::<Vec<_>>(), "steps count from 1");
    assert_eq!(events.iter().map(|e| e.2).collect::<Vec<_>>(), order, "one event per slice, in the run's order");
    assert!(events.iter().all(|e| e.1 == hand.total_steps()));
    for (step, _, slice, _, labels) in &events {
        if events.iter().rev().find(|e| e.2 == *slice).map(|e| e.0) == Some(*step) {
            assert_eq!(labels, &expected[*slice], "slice {slice}: the event carries the final label map");
        }
    }
    assert_eq!((finished.steps, finished.total), (order.len(), hand.total_steps()));
    let RunReport::FewShot(report) = &finished.report else { panic!("a few-shot report") };
    assert_eq!((report.order.clone(), report.drawn_slices.clone(), report.classes.clone()), (order, vec![3], vec![1]));
    assert!(report.supports.is_empty() && report.complete && report.seconds == 1.5 && report.outputs.is_empty());
    assert_eq!(report.frames_encoded, hand.frames_encoded());
}

#[test]
fn a_job_stops_when_its_callback_says_so_and_drawn_masks_can_be_supports() {
    let (fx, model, frames, volume) = setup();
    let job = |as_supports| Job {
        volume: &volume,
        mapping: Intensity::Identity,
        truth: None,
        weights: "reduced".into(),
        method: Method::FewShot { model: &model, prompts: prompts(&fx, as_supports) },
    };
    let (outcome, events) = run(job(true), |step| step < 2);
    let Outcome::Cancelled { steps, total } = outcome else { panic!("stopped at step 2") };
    assert_eq!((steps, events.len()), (2, 2));
    // The drawn slice became a support inserted before the middle: the sequence holds n + 1 frames, and the
    // reverse pass starts again from that support's frame, so the run counts n + 2 steps.
    assert_eq!(total, frames.len() + 2);

    let (outcome, _) = run(job(true), |_| true);
    let Outcome::Done(finished) = outcome else { panic!("ran to the end") };
    let RunReport::FewShot(report) = &finished.report else { panic!("a few-shot report") };
    assert_eq!((report.supports.clone(), report.drawn_slices.clone()), (vec!["frame 3".to_string()], vec![]));
    assert!(finished.labels.iter().all(|l| l.len() == volume.width * volume.height));
    // Only query slices make steps: each slice once (the support's frames are not slices).
    assert_eq!((finished.steps, finished.total), (frames.len(), frames.len() + 2));

    let mut empty = prompts(&fx, false);
    empty.drawn.clear();
    let job = Job { volume: &volume, mapping: Intensity::Identity, truth: None, weights: "w".into(), method: Method::FewShot { model: &model, prompts: empty } };
    let mut never = async |_: StepEvent<'_>| -> Result<bool, String> { panic!("no step without a prompt") };
    let Err(e) = pollster::block_on(job.run(&mut never, || 0.0)) else { panic!("a job with no prompt is refused") };
    assert!(e.contains("no mask, no support and no click"), "{e}");
}

#[test]
fn a_rerun_through_the_feature_cache_encodes_nothing_seen_and_gives_the_same_labels() {
    let (fx, model, frames, volume) = setup();
    let job = |prompts| Job {
        volume: &volume,
        mapping: Intensity::Identity,
        truth: None,
        weights: "reduced".into(),
        method: Method::FewShot { model: &model, prompts },
    };
    let finish = |job| match run(job, |_| true).0 {
        Outcome::Done(f) => f,
        Outcome::Cancelled { .. } => panic!("ran to the end"),
    };
    let encoded = |f: &Finished| match &f.report {
        RunReport::FewShot(r) => r.frames_encoded,
        RunReport::PromptFree(_) => panic!("a few-shot report"),
    };
    // A corrected mask: the drawn one with its first row of pixels removed.
    let mut corrected = prompts(&fx, false);
    let labels = &mut corrected.drawn[0].labels;
    let first_row = (0..labels.height()).find(|&y| (0..labels.width()).any(|x| labels.get_pixel(x, y)[0] > 0));
    let y = first_row.expect("the fixture's mask is not empty");
    (0..labels.width()).for_each(|x| labels.put_pixel(x, y, image::Luma([0])));

    for modes in [(Mode::Propagate(Placement::Middle), false), (Mode::SupportsOnly, true)] {
        let cache = FeatureCache::shared(feature_cache::DEFAULT_BUDGET_BYTES);
        let cached = |mut p: Prompts| {
            p.feature_cache = Some(cache.clone());
            p
        };
        let with_mode = |mut p: Prompts| {
            (p.mode, p.drawn_as_supports) = modes;
            p
        };
        let plain = finish(job(with_mode(prompts(&fx, false))));
        let first = finish(job(cached(with_mode(prompts(&fx, false)))));
        let again = finish(job(cached(with_mode(prompts(&fx, false)))));
        assert_eq!((first.labels.clone(), again.labels.clone()), (plain.labels.clone(), plain.labels.clone()), "{modes:?}");
        assert_eq!(encoded(&first), encoded(&plain).min(frames.len()), "{modes:?}: the first run encodes every slice once");
        assert_eq!(encoded(&again), 0, "{modes:?}: the re-run finds every slice in the cache");

        let fixed_plain = finish(job(with_mode(corrected_prompts(&corrected))));
        let fixed = finish(job(cached(with_mode(corrected_prompts(&corrected)))));
        assert_eq!(fixed.labels, fixed_plain.labels, "{modes:?}: a corrected mask gives what it gives without the cache");
        assert_eq!(encoded(&fixed), 0);
        let stats = cache.borrow().stats();
        assert_eq!(stats.entries, frames.len(), "{modes:?}: one entry per distinct slice");
        assert!(stats.bytes <= stats.budget_bytes && stats.hits > 0);
    }
}

fn corrected_prompts(p: &Prompts) -> Prompts {
    Prompts { drawn: p.drawn.clone(), drawn_as_supports: p.drawn_as_supports, mode: p.mode, ..Prompts::default() }
}

/// The page's encoder helpers hand features over as plain numbers (`cache_features`): what the model computes
/// comes back as the same tensors, and levels of another shape, count or length are refused with a message.
#[test]
fn features_handed_over_as_numbers_must_be_the_models_shapes() {
    use memseg::sam2::sam2_base::ImageFeatures;
    let (_, model, frames, _) = setup();
    let features = model.forward_image(memseg::session::preprocess(&model, &frames[0]));
    let values = |t: &burn::tensor::Tensor<4>| pollster::block_on(read_f32(t.clone())).unwrap();
    let numbers: Vec<(Vec<usize>, Vec<f32>)> = features.backbone_fpn.iter().map(|t| (t.dims().to_vec(), values(t))).collect();
    assert_eq!(numbers.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(), model.feature_shapes().map(|s| s.to_vec()));
    let back = ImageFeatures::from_levels(&model, numbers.clone()).unwrap();
    for (a, b) in back.backbone_fpn.iter().zip(&features.backbone_fpn) {
        assert_eq!(values(a), values(b));
    }

    let refused = |levels: Vec<(Vec<usize>, Vec<f32>)>| ImageFeatures::from_levels(&model, levels).unwrap_err();
    assert!(refused(numbers[..2].to_vec()).contains("2 feature levels"));
    let mut swapped = numbers.clone();
    swapped.swap(0, 1);
    assert!(refused(swapped).contains("feature level 0: shape"));
    let mut short = numbers.clone();
    short[2].1.pop();
    assert!(refused(short).contains("feature level 2"));
    let mut other_channels = numbers.clone();
    other_channels[1].0[1] *= 2;
    other_channels[1].1.extend(numbers[1].1.iter().copied());
    assert!(refused(other_channels).contains("feature level 1"));
}
