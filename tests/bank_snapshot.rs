//! The teaching view's snapshots (`SliceOutput::bank`) follow SAM2's rules on real runs of the reduced
//! SAM2.1 fixture model: which memories each slice attends to, with which temporal slots; supports-only attends
//! to the supports alone; SGP's support scores and eviction decisions are consistent with the kept set.
//!
//! The expectations are written from the rules (Meta's `_prepare_memory_conditioned_features`, SGP's
//! eviction), not from `MemoryBank::select`, so a snapshot that misreports the core fails here.

mod common;

use common::{VideoFixture, fixtures};
use image::{GrayImage, RgbImage};
use memseg::sam2::Sam2Base;
use memseg::session::{MemoryOptions, Mode, Placement, Session, SliceOutput, Support};
use memseg::session::bank_snapshot::{ObjectBank, Outcome, Place};

fn fixture() -> VideoFixture {
    VideoFixture::open(&fixtures().join("tiny21_reduced_128.mid.video.safetensors"))
}


/// The fixture's mask on frame 3, as class 1.
fn mask(fx: &VideoFixture) -> GrayImage {
    fx.mask_labels(3)
}

fn run_all(session: &Session, model: &Sam2Base, mode: Mode, memory: MemoryOptions) -> Vec<SliceOutput> {
    let mut run = pollster::block_on(session.start(model, mode, memory)).unwrap();
    let mut outputs = Vec::new();
    while let Some(o) = pollster::block_on(run.step()) {
        outputs.push(o.unwrap());
    }
    outputs
}

fn spatial(view: &ObjectBank) -> Vec<(Place, usize, usize)> {
    view.spatial.iter().map(|s| (s.at, s.t_pos, s.tpos_enc)).collect()
}

fn tracked_held(view: &ObjectBank) -> Vec<Place> {
    view.held.iter().filter(|h| !h.conditioning).map(|h| h.at).collect()
}

#[test]
fn propagation_attends_to_the_drawn_slice_and_the_six_previous_slices() {
    let fx = fixture();
    let model = fx.model(&burn::tensor::Device::flex());
    let base = fx.frames_rgb();
    let n = 12;
    let drawn = 2;
    let frames: Vec<RgbImage> = (0..n).map(|i| base[i % base.len()].clone()).collect();
    let mut session = Session::new(frames, vec![1]).unwrap();
    session.add_query_mask(drawn, "drawn", mask(&fx)).unwrap();
    let outputs = run_all(&session, &model, Mode::Propagate(Placement::Middle), MemoryOptions::default());
    let slices: Vec<(usize, bool)> = outputs.iter().map(|o| (o.slice, o.reverse)).collect();
    let expected: Vec<(usize, bool)> = (drawn..n).map(|z| (z, false)).chain((0..=drawn).rev().map(|z| (z, true))).collect();
    assert_eq!(slices, expected);
    for out in &outputs {
        assert_eq!(out.bank.num_maskmem, 7);
        let view = &out.bank.objects[0];
        let (z, reverse) = (out.slice as i64, out.reverse);
        if out.slice == drawn {
            assert!(view.conditioning && view.spatial.is_empty() && view.pointers.is_empty(), "the drawn slice attends to nothing");
            continue;
        }
        // Tracked so far (in the bank): forward, the slices after the drawn one up to z - 1; in reverse, the
        // whole forward pass plus the reverse slices after z.
        let tracked: Vec<i64> = if reverse { (z + 1..n as i64).filter(|&t| t != drawn as i64).collect() } else { (drawn as i64 + 1..z).collect() };
        assert_eq!(tracked_held(view), tracked.iter().map(|&t| Place::Slice(t as usize)).collect::<Vec<_>>(), "slice {z} reverse {reverse}");
        // SAM2: the conditioning frame with t_pos 0 (tpos_enc row 6), then z -/+ 1 .. 6 with t_pos 7 - distance
        // (tpos_enc row distance - 1), oldest first, where tracked.
        let step = if reverse { 1 } else { -1 };
        let mut want = vec![(Place::Slice(drawn), 0, 6)];
        for distance in (1..=6).rev() {
            let t = z + step * distance;
            if tracked.contains(&t) {
                want.push((Place::Slice(t as usize), 7 - distance as usize, distance as usize - 1));
            }
        }
        assert_eq!(spatial(view), want, "slice {z} reverse {reverse}");
        // Pointers: the conditioning frame (signed distance), then the tracked slices within 15, closest first.
        let mut pointers = vec![(Place::Slice(drawn), if reverse { drawn as i64 - z } else { z - drawn as i64 })];
        pointers.extend((1..n.min(16) as i64).map(|d| z + step * d).filter(|t| tracked.contains(t)).map(|t| (Place::Slice(t as usize), (t - z).abs())));
        assert_eq!(view.pointers.iter().map(|p| (p.at, p.distance)).collect::<Vec<_>>(), pointers, "slice {z} reverse {reverse}");
        assert_eq!(view.pointer_distance_scale, n.min(16) - 1);
        assert!(view.supports.is_empty() && view.eviction.is_none());
    }
}

#[test]
fn supports_only_attends_to_the_supports_alone_and_sgp_scores_explain_the_choice() {
    let fx = fixture();
    let model = fx.model(&burn::tensor::Device::flex());
    let frames = fx.frames_rgb();
    let l = mask(&fx);
    let queries = vec![frames[1].clone(), frames[5].clone()];
    let mut session = Session::new(queries, vec![1]).unwrap();
    for f in [0usize, 1, 4, 5] {
        session.add_support(Support { name: format!("{f}"), image: frames[f].clone(), labels: l.clone() }).unwrap();
    }
    // Every support: all four conditioning at t_pos 0, nothing else; pointers from each support.
    for out in run_all(&session, &model, Mode::SupportsOnly, MemoryOptions::default()) {
        let view = &out.bank.objects[0];
        let supports: Vec<Place> = (0..4).map(Place::Support).collect();
        assert_eq!(spatial(view), supports.iter().map(|&p| (p, 0, 6)).collect::<Vec<_>>());
        assert!(view.held.iter().all(|h| h.conditioning) && view.held.len() == 4);
        assert_eq!(view.pointers.iter().map(|p| (p.at, p.distance)).collect::<Vec<_>>(), supports.iter().zip([4, 3, 2, 1]).map(|(&p, d)| (p, d)).collect::<Vec<_>>());
    }
    // SGP, k = 2: the scores rank the supports, the two best are chosen and are exactly what is attended to.
    let memory = MemoryOptions { select_supports: Some(2), ..Default::default() };
    for out in run_all(&session, &model, Mode::SupportsOnly, memory) {
        let view = &out.bank.objects[0];
        assert_eq!(view.supports.len(), 4);
        assert!(view.supports.windows(2).all(|w| w[0].score >= w[1].score && w[1].rank == w[0].rank + 1));
        let chosen: Vec<usize> = view.supports.iter().filter(|s| s.chosen).map(|s| s.support).collect();
        assert_eq!(chosen, view.supports[..2].iter().map(|s| s.support).collect::<Vec<_>>());
        // A query identical to a support has cosine 1 with it: ranked first.
        let same = if out.slice == 0 { 1 } else { 3 };
        assert_eq!(view.supports[0].support, same);
        assert!((view.supports[0].score - 1.0).abs() < 1e-4, "{}", view.supports[0].score);
        // Attended: the chosen, least similar first (the most similar closest to the query).
        let attended: Vec<Place> = view.spatial.iter().map(|s| s.at).collect();
        assert_eq!(attended, chosen.iter().rev().map(|&s| Place::Support(s)).collect::<Vec<_>>());
        assert_eq!(out.supports_used[0], chosen.iter().rev().copied().collect::<Vec<_>>());
    }
}

#[test]
fn similarity_eviction_keeps_what_the_rule_says() {
    let fx = fixture();
    let model = fx.model(&burn::tensor::Device::flex());
    let base = fx.frames_rgb();
    let frames: Vec<RgbImage> = (0..16).map(|i| base[(i * 3) % base.len()].clone()).collect();
    let mut session = Session::new(frames, vec![1]).unwrap();
    session.add_query_mask(4, "drawn", mask(&fx)).unwrap();
    let memory = MemoryOptions { similarity_eviction: true, ..Default::default() };
    let outputs = run_all(&session, &model, Mode::Propagate(Placement::Middle), memory);
    // The pool as the decisions say it evolves; each pass starts empty.
    let mut pool: Vec<Place> = Vec::new();
    let (mut replaced, mut rejected, mut previous_reverse) = (0, 0, false);
    for out in &outputs {
        let view = &out.bank.objects[0];
        if out.reverse != previous_reverse {
            pool.clear();
            previous_reverse = out.reverse;
        }
        assert_eq!(tracked_held(view).len(), pool.len(), "slice {}: the bank holds the kept memories only", out.slice);
        assert!(pool.iter().all(|p| tracked_held(view).contains(p)));
        let Some(d) = &view.eviction else {
            assert!(view.conditioning, "a tracked slice always gets a decision");
            continue;
        };
        // Attended: the kept memories, closest first with t_pos 6, 5, ...
        let mut kept: Vec<Place> = pool.clone();
        let Place::Slice(z) = d.new else { panic!("a support is never evicted") };
        kept.sort_by_key(|p| match p { Place::Slice(s) => s.abs_diff(z), Place::Support(_) => usize::MAX });
        let recent: Vec<(Place, usize)> = view.spatial.iter().filter(|s| !s.conditioning).map(|s| (s.at, s.t_pos)).collect();
        assert_eq!(recent, kept.iter().enumerate().map(|(r, &p)| (p, 6 - r)).collect::<Vec<_>>(), "slice {z}");
        // The rule, from the numbers it reports.
        assert_eq!(d.pool.iter().map(|m| m.at).collect::<Vec<_>>(), pool);
        assert_eq!(d.capacity, 6);
        if pool.len() < d.capacity {
            assert_eq!(d.outcome, Outcome::Added);
            pool.push(d.new);
            continue;
        }
        let least = d.pool.iter().min_by(|a, b| a.similarity_to_new.total_cmp(&b.similarity_to_new)).unwrap();
        let (i, sim_new_i) = d.least_similar.unwrap();
        assert_eq!((i, sim_new_i), (least.at, least.similarity_to_new));
        let (j, sim_i_j) = d.closest_to_it.unwrap();
        let iou_j = d.pool.iter().find(|m| m.at == j).unwrap().iou;
        let replace = sim_new_i < sim_i_j && d.new_iou > iou_j - 0.1;
        assert_eq!(d.outcome, if replace { Outcome::Replaced } else { Outcome::Rejected }, "slice {z}: {d:?}");
        if replace {
            replaced += 1;
            *pool.iter_mut().find(|p| **p == j).unwrap() = d.new;
        } else {
            rejected += 1;
        }
    }
    eprintln!("similarity eviction: {replaced} replaced, {rejected} rejected");
    assert!(replaced + rejected > 0, "the pool filled up at least once");
}
