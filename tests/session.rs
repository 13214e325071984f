//! The few-shot session against the video predictor it is built on (itself checked against Meta's
//! `SAM2VideoPredictor` in video_parity.rs), on the reduced SAM2.1 fixture model and frames:
//! - supports-only (1S1Q / kS1Q) equals a fresh video `[supports..., query]` per query slice;
//! - propagate with the memory release equals a plain `propagate_in_video` keeping every memory, on a sequence
//!   long enough for memories to be released;
//! - several classes share each slice's encoding; SGP's support selection and eviction run and choose as stated.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{VideoFixture, fixtures, max_abs_diff, values};
use image::{GrayImage, RgbImage};
use memseg::sam2::video_predictor::{FrameSource, VideoPredictor};
use memseg::sam2::{Sam2Base, transforms};
use memseg::session::{MemoryOptions, Mode, Placement, Session, SliceOutput, Support};

fn fixture() -> VideoFixture {
    VideoFixture::open(&fixtures().join("tiny21_reduced_128.mid.video.safetensors"))
}


/// The fixture's mask on frame 3 as label `class`, and a second object (a box) as label `class + 1`.
fn labels(fx: &VideoFixture, class: u8, with_box: bool) -> GrayImage {
    let (_, mask) = fx.tensor("prompt.3.mask").unwrap();
    let s = (mask.len() as f64).sqrt() as u32;
    GrayImage::from_fn(s, s, |x, y| {
        let i = (y * s + x) as usize;
        let in_box = with_box && (8..30).contains(&x) && (90..120).contains(&y);
        image::Luma([if in_box { class + 1 } else if mask[i] > 0.5 { class } else { 0 }])
    })
}

struct Images(Vec<RgbImage>, usize, Device);

impl FrameSource for Images {
    fn num_frames(&self) -> usize {
        self.0.len()
    }
    fn frame(&self, i: usize) -> Result<Tensor<4>, String> {
        Ok(transforms::preprocess_rgb8(&self.0[i], self.1, &self.2))
    }
}

fn mask_tensor(labels: &GrayImage, class: u8, device: &Device) -> Tensor<4> {
    let (w, h) = labels.dimensions();
    let v: Vec<f32> = labels.pixels().map(|p| f32::from(p[0] == class)).collect();
    Tensor::from_data(TensorData::new(v, [1, 1, h as usize, w as usize]), device)
}

fn run_all(session: &Session, model: &Sam2Base, mode: Mode, memory: MemoryOptions) -> (Vec<SliceOutput>, usize) {
    let mut run = pollster::block_on(session.start(model, mode, memory)).unwrap();
    let mut outputs = Vec::new();
    while let Some(o) = pollster::block_on(run.step()) {
        outputs.push(o.unwrap());
    }
    (outputs, run.frames_encoded())
}

#[test]
fn supports_only_equals_a_fresh_video_per_query() {
    let fx = fixture();
    let device = Device::flex();
    let model = fx.model(&device);
    let frames = fx.frames_rgb();
    let s = model.image_size();
    // Two supports (frames 3 and 5 with the same mask), queries: every frame.
    let support_labels = labels(&fx, 1, false);
    let supports = [3usize, 5];
    let mut session = Session::new(frames.clone(), vec![1]).unwrap();
    for &f in &supports {
        session.add_support(Support { name: format!("frame {f}"), image: frames[f].clone(), labels: support_labels.clone() }).unwrap();
    }
    let (outputs, encoded) = run_all(&session, &model, Mode::SupportsOnly, MemoryOptions::default());
    assert_eq!(encoded, supports.len() + frames.len(), "supports encoded once, each query once");

    let mut worst = 0f32;
    for out in &outputs {
        let video: Vec<RgbImage> = supports.iter().map(|&f| frames[f].clone()).chain([frames[out.slice].clone()]).collect();
        let mut vp = VideoPredictor::new(&model, Box::new(Images(video, s, device.clone())));
        for i in 0..supports.len() {
            vp.add_new_mask(i, 0, mask_tensor(&support_labels, 1, &device)).unwrap();
        }
        let mut last = None;
        vp.propagate_in_video(None, None, false, |o| {
            last = Some(o[0].pred_masks.clone());
            true
        })
        .unwrap();
        let (_, expected) = values(&last.unwrap());
        let (_, ours) = values(&out.logits[0]);
        worst = worst.max(max_abs_diff(&ours, &expected));
    }
    eprintln!("supports-only vs fresh videos: max |diff| {worst:.2e}");
    assert!(worst <= 1e-4, "supports-only differs from a fresh video per query by {worst}");
}

#[test]
fn propagate_releases_memories_without_changing_outputs() {
    let fx = fixture();
    let device = Device::flex();
    let model = fx.model(&device);
    let base = fx.frames_rgb();
    // 40 slices (more than the 23 a memory can be reached from), drawn mask on slice 20.
    let frames: Vec<RgbImage> = (0..40).map(|i| base[(i * 3) % base.len()].clone()).collect();
    let drawn = labels(&fx, 1, false);
    let mut session = Session::new(frames.clone(), vec![1]).unwrap();
    session.add_query_mask(20, "drawn", drawn.clone()).unwrap();
    let (outputs, encoded) = run_all(&session, &model, Mode::Propagate(Placement::Middle), MemoryOptions::default());
    assert_eq!(encoded, 40, "each slice encoded once");

    let mut vp = VideoPredictor::new(&model, Box::new(Images(frames, model.image_size(), device.clone())));
    vp.add_new_mask(20, 0, mask_tensor(&drawn, 1, &device)).unwrap();
    let mut expected = Vec::new();
    for reverse in [false, true] {
        vp.propagate_in_video(None, None, reverse, |o| {
            expected.push((o[0].frame, o[0].pred_masks.clone()));
            true
        })
        .unwrap();
    }
    assert_eq!(outputs.iter().map(|o| o.slice).collect::<Vec<_>>(), expected.iter().map(|e| e.0).collect::<Vec<_>>());
    for (out, (frame, logits)) in outputs.iter().zip(&expected) {
        assert_eq!(values(&out.logits[0]).1, values(logits).1, "slice {frame}: releasing memories changed the output");
    }
}

#[test]
fn classes_share_each_slice_encoding_and_inserted_supports_are_skipped() {
    let fx = fixture();
    let device = Device::flex();
    let model = fx.model(&device);
    let frames = fx.frames_rgb();
    let two = labels(&fx, 1, true);
    let mut session = Session::new(frames.clone(), vec![1, 2]).unwrap();
    session.add_support(Support { name: "support".into(), image: frames[3].clone(), labels: two }).unwrap();
    let (outputs, encoded) = run_all(&session, &model, Mode::Propagate(Placement::Middle), MemoryOptions::default());
    // 7 query slices + 1 inserted support, each encoded once for both classes.
    assert_eq!(encoded, 8);
    // The support sits before query slice 3: forward 3..6, then reverse 2..0; the support itself is not output.
    assert_eq!(outputs.iter().map(|o| o.slice).collect::<Vec<_>>(), vec![3, 4, 5, 6, 2, 1, 0]);
    assert!(outputs.iter().all(|o| o.logits.len() == 2));
}

#[test]
fn sgp_support_selection_picks_the_most_similar_support() {
    let fx = fixture();
    let device = Device::flex();
    let model = fx.model(&device);
    let frames = fx.frames_rgb();
    let l = labels(&fx, 1, false);
    let mut session = Session::new(vec![frames[1].clone(), frames[5].clone()], vec![1]).unwrap();
    for f in [0usize, 1, 2, 4, 5, 6] {
        session.add_support(Support { name: format!("{f}"), image: frames[f].clone(), labels: l.clone() }).unwrap();
    }
    let memory = MemoryOptions { select_supports: Some(2), ..Default::default() };
    let (outputs, _) = run_all(&session, &model, Mode::SupportsOnly, memory);
    // A query identical to a support has cosine 1 with it: that support is chosen, placed last (closest).
    assert_eq!(*outputs[0].supports_used[0].last().unwrap(), 1, "support index 1 is frame 1");
    assert_eq!(*outputs[1].supports_used[0].last().unwrap(), 4, "support index 4 is frame 5");
    assert!(outputs.iter().all(|o| o.supports_used[0].len() == 2));
}

#[test]
fn similarity_eviction_runs_both_passes() {
    let fx = fixture();
    let device = Device::flex();
    let model = fx.model(&device);
    let base = fx.frames_rgb();
    let frames: Vec<RgbImage> = (0..16).map(|i| base[i % base.len()].clone()).collect();
    let mut session = Session::new(frames, vec![1]).unwrap();
    session.add_query_mask(8, "drawn", labels(&fx, 1, false)).unwrap();
    let memory = MemoryOptions { similarity_eviction: true, ..Default::default() };
    let (outputs, _) = run_all(&session, &model, Mode::Propagate(Placement::Middle), memory);
    let mut slices: Vec<usize> = outputs.iter().map(|o| o.slice).collect();
    slices.sort_unstable();
    slices.dedup();
    assert_eq!(slices, (0..16).collect::<Vec<_>>());
    // Refused where it has no meaning.
    let err = pollster::block_on(session.start(&model, Mode::SupportsOnly, memory)).err().unwrap();
    assert!(err.contains("propagate"), "{err}");
}
