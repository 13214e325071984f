//! Parity of SAM2's memory modules (memory encoder, memory attention) with Meta's code: every call of
//! `memory_encoder` and `memory_attention` that Meta's video predictor made while tracking the fixture videos
//! (`tests/fixtures/<case>.<scenario>.video.safetensors`, recorded with forward hooks by
//! `tests/fixtures/make_fixtures.py`) is replayed with Meta's exact inputs, and every output is compared.
//! Calls whose inputs the fixture's "lean" tier left out are counted, not replayed.
//!
//! Tolerance: max |ours - Meta's| <= 1e-4 x std(Meta's), in f32. The full-size cases run when
//! `MEMSEG_FULL_FIXTURES` names the folder `make_fixtures.py --full` wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod common;

use burn::tensor::{Device, Tensor, activation};
use common::{VideoFixture as Fixture, fixtures, std_dev, values, video_fixtures};
use memseg::backend::{Preference, init_native};
use memseg::sam2::Sam2Config;

const REL_TOL: f32 = 1e-4;




/// `max |err| / std(reference)` per compared tensor.
#[derive(Default)]
struct Errors(BTreeMap<String, f32>);

impl Errors {
    fn compare<const D: usize>(&mut self, label: &str, reference: (Vec<usize>, Vec<f32>), ours: &Tensor<D>) {
        let ours = values(ours);
        assert_eq!(ours.0, reference.0, "{label}: shape");
        let max = ours.1.iter().zip(&reference.1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max.is_finite(), "{label}: not finite");
        self.0.insert(label.to_string(), if max == 0.0 { 0.0 } else { max / std_dev(&reference.1) });
    }

    fn report_and_check(&self, what: &str, min_compared: usize) {
        eprintln!("{what}: max |err| / std per output");
        for (name, e) in &self.0 {
            eprintln!("  {name:<56} {e:.2e}");
        }
        assert!(self.0.len() >= min_compared, "{what}: only {} outputs compared", self.0.len());
        let worst = self.0.iter().max_by(|a, b| a.1.total_cmp(b.1)).expect("nothing compared");
        eprintln!("{what}: {} outputs compared, worst {} {:.2e}", self.0.len(), worst.0, worst.1);
        assert!(*worst.1 <= REL_TOL, "{what}: {} is off by {:.2e} x std", worst.0, worst.1);
    }
}

/// Replays every fully recorded call of both modules; returns how many calls were replayed.
fn check_fixture(fx: &Fixture, device: &Device, errors: &mut Errors) -> usize {
    let model = fx.model(device);
    let mut replayed = 0;
    let mut skipped = 0;

    for call in fx.calls("memory_encoder") {
        let pre = format!("call.memory_encoder.{}.", call.k);
        if !call.has(&["in.pix_feat", "in.masks", "out.vision_features", "out.vision_pos_enc.0"]) {
            skipped += 1;
            continue;
        }
        let skip_mask_sigmoid = call.scalars["skip_mask_sigmoid"].as_bool().unwrap_or(false);
        let (features, pos) = model.memory_encoder.forward(
            fx.load(&format!("{pre}in.pix_feat"), device).unwrap(),
            fx.load(&format!("{pre}in.masks"), device).unwrap(),
            skip_mask_sigmoid,
        );
        let label = format!("{}: memory_encoder.{} ({})", fx.name, call.k, call.phase);
        let reference = |out: &str| fx.tensor(&format!("{pre}out.{out}")).unwrap();
        errors.compare(&format!("{label} vision_features"), reference("vision_features"), &features);
        errors.compare(&format!("{label} vision_pos_enc"), reference("vision_pos_enc.0"), &pos);
        replayed += 1;
    }

    for call in fx.calls("memory_attention") {
        let pre = format!("call.memory_attention.{}.", call.k);
        if !call.has(&["in.curr.0", "in.curr_pos.0", "in.memory", "in.memory_pos", "out.0"]) {
            skipped += 1;
            continue;
        }
        let num_obj_ptr_tokens = call.scalars["num_obj_ptr_tokens"].as_u64().unwrap() as usize;
        let out = model.memory_attention.forward(
            fx.load(&format!("{pre}in.curr.0"), device).unwrap(),
            fx.load(&format!("{pre}in.curr_pos.0"), device).unwrap(),
            fx.load(&format!("{pre}in.memory"), device).unwrap(),
            fx.load(&format!("{pre}in.memory_pos"), device).unwrap(),
            num_obj_ptr_tokens,
        );
        let label = format!(
            "{}: memory_attention.{} ({}, {} memory tokens, {} pointer tokens)",
            fx.name,
            call.k,
            call.phase,
            fx.tensor(&format!("{pre}in.memory")).unwrap().0[0],
            num_obj_ptr_tokens
        );
        errors.compare(&label, fx.tensor(&format!("{pre}out.0")).unwrap(), &out);
        replayed += 1;
    }
    eprintln!("{}: {replayed} calls replayed, {skipped} left out by the fixture's tier", fx.name);
    replayed
}

fn check_dir(dir: &Path, device: &Device, what: &str) {
    let files = video_fixtures(dir);
    assert!(!files.is_empty(), "no video fixtures in {}", dir.display());
    let mut errors = Errors::default();
    let mut replayed = 0;
    for path in &files {
        replayed += check_fixture(&Fixture::open(path), device, &mut errors);
    }
    assert!(replayed > 0, "{what}: no call is fully recorded in {}", dir.display());
    errors.report_and_check(what, 2);
}

#[test]
fn reduced_memory_modules_match_meta_on_flex() {
    check_dir(&fixtures(), &Device::flex(), "reduced (flex)");
}

/// On wgpu where a Vulkan/Metal/DX12 adapter exists (lavapipe on machines without a GPU): the fully
/// recorded reduced fixtures only ("all" tier).
#[test]
fn reduced_memory_modules_match_meta_on_wgpu() {
    let compute = match init_native(Preference::Wgpu) {
        Ok(c) => c,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let mut errors = Errors::default();
    for path in video_fixtures(&fixtures()) {
        let fx = Fixture::open(&path);
        if fx.meta["tier"] == "all" {
            check_fixture(&fx, &compute.device, &mut errors);
        }
    }
    errors.report_and_check("reduced (wgpu)", 2);
}

#[test]
fn full_memory_modules_match_meta_when_fixtures_are_present() {
    let Some(dir) = std::env::var_os("MEMSEG_FULL_FIXTURES").map(PathBuf::from) else {
        return eprintln!("skipped: set MEMSEG_FULL_FIXTURES to the folder of `make_fixtures.py --full`");
    };
    check_dir(&dir, &Device::flex(), "full (flex)");
}

/// Meta's `skip_mask_sigmoid = false` path (SAM2Base always passes true): the same as feeding the sigmoid.
#[test]
fn mask_sigmoid_is_applied_unless_skipped() {
    let files = video_fixtures(&fixtures());
    let fx = Fixture::open(files.first().expect("a video fixture"));
    let device = Device::flex();
    let model = fx.model(&device);
    let call = fx.calls("memory_encoder").into_iter().find(|c| c.has(&["in.pix_feat", "in.masks"])).unwrap();
    let pre = format!("call.memory_encoder.{}.", call.k);
    let pix: Tensor<4> = fx.load(&format!("{pre}in.pix_feat"), &device).unwrap();
    // Logits of moderate size, so the sigmoid matters.
    let masks: Tensor<4> = fx.load::<4>(&format!("{pre}in.masks"), &device).unwrap().mul_scalar(0.2);
    let (a, pos_a) = model.memory_encoder.forward(pix.clone(), masks.clone(), false);
    let (b, pos_b) = model.memory_encoder.forward(pix.clone(), activation::sigmoid(masks.clone()), true);
    let (c, _) = model.memory_encoder.forward(pix, masks, true);
    let mut errors = Errors::default();
    errors.compare("sigmoid inside vs outside", values(&b), &a);
    errors.compare("position encoding", values(&pos_b), &pos_a);
    errors.report_and_check("skip_mask_sigmoid", 2);
    let differs = values(&a).1.iter().zip(values(&c).1).any(|(x, y)| (x - y).abs() > 1e-3);
    assert!(differs, "skip_mask_sigmoid had no effect");
}

/// The memory modules' settings follow Meta's YAML keys (the reduced fixtures' overrides) and are checked.
#[test]
fn memory_config_overrides_and_validation() {
    let mut c = Sam2Config::tiny();
    c.apply_override("++model.memory_attention.layer.self_attention.feat_sizes=[16,16]").unwrap();
    c.apply_override("++model.memory_attention.layer.cross_attention.kv_in_dim=16").unwrap();
    c.apply_override("++model.memory_encoder.fuser.layer.dim=32").unwrap();
    assert_eq!(c.memory_attention.layer.self_attention.feat_sizes, [16, 16]);
    assert_eq!(c.memory_attention.layer.cross_attention.kv_in_dim, Some(16));
    assert_eq!(c.memory_encoder.fuser.layer.dim, 32);
    let err = c.validate().unwrap_err();
    assert!(err.contains("neck.d_model"), "{err}");
    let mut c = Sam2Config::tiny();
    assert_eq!(c.memory_encoder.mask_downsampler.num_layers(), 4);
    c.apply_override("++model.memory_encoder.mask_downsampler.stride=4").unwrap();
    c.apply_override("++model.memory_encoder.mask_downsampler.kernel_size=4").unwrap();
    c.apply_override("++model.memory_encoder.mask_downsampler.padding=0").unwrap();
    assert_eq!(c.memory_encoder.mask_downsampler.num_layers(), 2);
    c.validate().unwrap();
    c.apply_override("++model.memory_encoder.mask_downsampler.stride=3").unwrap();
    assert!(c.validate().unwrap_err().contains("total_stride"));
}
