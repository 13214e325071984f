//! The prompt-free adaptation (issue 7, `docs/adapters.md`): the LW-Adapter fold is exact, the PEG is the
//! identity at initialisation and lets the encoder run at any size, the adapter file round-trips, and the MAC
//! counts of the base, unfolded and folded encoders.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Distribution, Tensor};
use memseg::sam2::adapter::{self, AdapterSet, AdapterSpec};
use memseg::sam2::{Sam2Base, Sam2Config};

/// The reduced SAM2.1 model of the committed fixtures (official `.pt` layout, seeded random weights).
fn reduced(device: &Device) -> (Sam2Base, Sam2Config) {
    let fx = common::VideoFixture::open(&common::fixtures().join("tiny21_reduced_256.mid.video.safetensors"));
    (fx.model(device), fx.config())
}

fn random<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device)
}

/// Makes every trained tensor non-zero, so that the adapters, PEG and tokens change the outputs.
fn randomize(model: &mut Sam2Base, device: &Device) {
    let trunk = &mut model.image_encoder.trunk;
    for block in trunk.blocks.iter_mut() {
        for a in [block.attn.qkv_adapter.as_mut(), block.mlp_adapter.as_mut()].into_iter().flatten() {
            a.up.weight = Param::from_tensor(random(a.up.weight.dims(), 0.1, device));
            let d = a.up.weight.dims()[1];
            a.up.bias = Some(Param::from_tensor(random([d], 0.1, device)));
        }
    }
    if let Some(peg) = trunk.peg.as_mut() {
        peg.conv.weight = Param::from_tensor(random(peg.conv.weight.dims(), 0.1, device));
        let c = peg.conv.weight.dims()[0];
        peg.conv.bias = Some(Param::from_tensor(random([c], 0.1, device)));
    }
}

fn levels(model: &Sam2Base, image: Tensor<4>) -> Vec<(Vec<usize>, Vec<f32>)> {
    model.image_encoder.forward_with(image, |_, _| {}).iter().map(common::values).collect()
}

/// max |a - b| / max |b| over all levels.
fn relative(a: &[(Vec<usize>, Vec<f32>)], b: &[(Vec<usize>, Vec<f32>)]) -> f32 {
    let mut err = 0f32;
    let mut scale = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0, "shapes");
        err = err.max(common::max_abs_diff(&x.1, &y.1));
        scale = scale.max(y.1.iter().fold(0f32, |m, v| m.max(v.abs())));
    }
    err / scale
}

#[test]
fn lw_adapter_folds_exactly_into_the_plain_encoder() {
    let device = Device::flex();
    let (mut model, _) = reduced(&device);
    let spec = AdapterSpec { peg: false, ..AdapterSpec::new(vec![0, 1, 2]) };
    for [h, w] in [[256, 256], [160, 96]] {
        let image = random([1, 3, h, w], 1.0, &device);
        let base = levels(&model, image.clone());
        let _set = AdapterSet::attach(spec.clone(), &mut model, &device);
        // Fresh adapters are the identity (zero `up`).
        assert_eq!(levels(&model, image.clone()), base, "a fresh adapter must not change the encoder");
        randomize(&mut model, &device);
        let unfolded = levels(&model, image.clone());
        let changed = relative(&base, &unfolded);
        let encoder = adapter::fold_encoder(model.image_encoder);
        assert!(encoder.trunk.blocks.iter().all(|b| b.attn.qkv_adapter.is_none() && b.mlp_adapter.is_none()));
        model.image_encoder = encoder;
        let folded = levels(&model, image);
        let err = relative(&folded, &unfolded);
        eprintln!("{h}x{w}: adapters move the features by {changed:.2e} (relative); folded vs unfolded {err:.2e}");
        assert!(changed > 1e-2, "the randomized adapters should change the features ({changed})");
        assert!(err <= 1e-5, "fold is off by {err:.2e} (relative to max |ref|)");
        let (fresh, _) = reduced(&device);
        model = fresh;
    }
}

#[test]
fn peg_is_identity_at_init_and_runs_any_size() {
    let device = Device::flex();
    let (mut model, config) = reduced(&device);
    let image = random([1, 3, 256, 256], 1.0, &device);
    let base = levels(&model, image.clone());
    let spec = AdapterSpec { qkv: false, mlp: false, ..AdapterSpec::new(vec![0, 1]) };
    let set = AdapterSet::attach(spec, &mut model, &device);
    assert!(model.image_encoder.trunk.peg.is_some());
    assert_eq!(levels(&model, image.clone()), base, "a zero PEG must leave the official path unchanged");

    // Non-square input: 160 x 96 (multiples of 32), FPN levels at strides 4, 8, 16; head logits at stride 4.
    randomize(&mut model, &device);
    let d = config.image_encoder.neck.d_model;
    let out = levels(&model, random([1, 3, 160, 96], 1.0, &device));
    let shapes: Vec<Vec<usize>> = out.iter().map(|l| l.0.clone()).collect();
    assert_eq!(shapes, vec![vec![1, d, 40, 24], vec![1, d, 20, 12], vec![1, d, 10, 6]]);
    assert!(out.iter().all(|l| l.1.iter().all(|v| v.is_finite())));
    let logits = set.logits(&model, random([1, 3, 160, 96], 1.0, &device));
    assert_eq!(logits.dims(), [2, 40, 24]);
    let labels = set.label_indices(logits, [160, 96]);
    assert_eq!(labels.dims(), [160, 96]);
    let moved = relative(&levels(&model, image), &base);
    assert!(moved > 1e-3, "a trained PEG changes the features ({moved})");
}

#[test]
fn adapter_file_round_trips() {
    let device = Device::flex();
    let (mut model, config) = reduced(&device);
    let set = AdapterSet::attach(AdapterSpec::new(vec![0, 3, 7]), &mut model, &device);
    randomize(&mut model, &device);
    let bytes = set.to_bytes(&model, &config).unwrap();
    let expected_values = adapter::trainable_parameters(&config, &set.spec);
    eprintln!("reduced adapter file: {} bytes, {expected_values} trained values", bytes.len());
    assert!(bytes.len() >= expected_values * 4 && bytes.len() < expected_values * 4 + 16384);
    let image = random([1, 3, 128, 192], 1.0, &device);
    let want = common::values(&set.logits(&model, image.clone()));

    let (mut fresh, _) = reduced(&device);
    let loaded = AdapterSet::from_bytes(&bytes, "a.safetensors", &mut fresh, &config).unwrap();
    assert_eq!(loaded.spec, set.spec);
    assert_eq!(common::values(&loaded.logits(&fresh, image.clone())), want, "identical outputs after a round trip");
    // Folded after loading: the same logits within the fold tolerance.
    fresh.image_encoder = adapter::fold_encoder(fresh.image_encoder);
    let folded = common::values(&loaded.logits(&fresh, image));
    let scale = want.1.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(common::max_abs_diff(&folded.1, &want.1) / scale <= 1e-5);

    // Refusals, named: truncated, not an adapter file, another encoder.
    let (mut other, _) = reduced(&device);
    let err = AdapterSet::from_bytes(&bytes[..bytes.len() / 2], "half.safetensors", &mut other, &config).unwrap_err();
    assert!(err.contains("half.safetensors"), "{err}");
    let mut tiny = Sam2Config::tiny();
    tiny.image_size = 256;
    let err = AdapterSet::from_bytes(&bytes, "a.safetensors", &mut other, &tiny).unwrap_err();
    assert!(err.contains("another image encoder"), "{err}");
}

#[test]
fn macs_of_base_unfolded_and_folded_encoders() {
    let device = Device::flex();
    let (_, reduced_config) = reduced(&device);
    let spec = AdapterSpec::new(vec![0, 1, 2]);
    let tiny = Sam2Config::tiny();
    for (name, config, size) in [("reduced", &reduced_config, 256), ("SAM2.1-tiny", &tiny, 1024), ("SAM2.1-tiny", &tiny, 512)] {
        let m = adapter::count_macs(config, Some(&spec), [size, size]);
        let plain = adapter::count_macs(config, None, [size, size]);
        assert_eq!(plain.base, m.base);
        assert_eq!(m.folded(), m.base + m.peg);
        let pct = |x: u64| 100.0 * (x as f64 / m.base as f64 - 1.0);
        eprintln!(
            "{name} at {size}: base {:.4} GMACs, unfolded {:.4} (+{:.2}%), folded {:.4} (+{:.3}%, the PEG)",
            m.base as f64 / 1e9,
            m.unfolded() as f64 / 1e9,
            pct(m.unfolded()),
            m.folded() as f64 / 1e9,
            pct(m.folded())
        );
        assert!(pct(m.folded()) < 2.0, "the folded encoder is within 2% MACs of the base");
    }
    // The full SAM2.1-tiny adapter file (randomly initialised model: only shapes matter).
    let mut model = Sam2Base::new(&tiny, &device);
    let set = AdapterSet::attach(spec.clone(), &mut model, &device);
    let bytes = set.to_bytes(&model, &tiny).unwrap();
    eprintln!(
        "SAM2.1-tiny adapter file (rank {}, {} classes): {} bytes, {} trained values",
        spec.rank,
        spec.classes.len(),
        bytes.len(),
        adapter::trainable_parameters(&tiny, &spec)
    );
}

/// A synthetic task: grey noisy background, a red disc (label 1) and a blue square (label 2) at random
/// places, 64 x 64.
fn synthetic(dir: &std::path::Path, n: usize, seed: u64) {
    let mut rng = memseg::train::Rng::new(seed);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    for i in 0..n {
        let s = 64u32;
        let mut img = image::RgbImage::new(s, s);
        let mut lab = image::GrayImage::new(s, s);
        let (cx, cy, r) = (12.0 + 40.0 * rng.uniform(), 12.0 + 40.0 * rng.uniform(), 6.0 + 5.0 * rng.uniform());
        let (sx, sy, side) = ((2.0 + 40.0 * rng.uniform()) as u32, (2.0 + 40.0 * rng.uniform()) as u32, 14 + (8.0 * rng.uniform()) as u32);
        for y in 0..s {
            for x in 0..s {
                let noise = (rng.uniform() * 40.0) as u8;
                let (mut px, mut l) = ([90 + noise, 90 + noise, 90 + noise], 0u8);
                if x >= sx && x < sx + side && y >= sy && y < sy + side {
                    (px, l) = ([30 + noise / 2, 40 + noise / 2, 200 + noise / 2], 2);
                }
                if (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r {
                    (px, l) = ([210 + noise / 2, 40 + noise / 2, 30 + noise / 2], 1);
                }
                img.put_pixel(x, y, image::Rgb(px));
                lab.put_pixel(x, y, image::Luma([l]));
            }
        }
        img.save(dir.join(format!("images/{i:03}.png"))).unwrap();
        lab.save(dir.join(format!("labels/{i:03}.png"))).unwrap();
    }
}

/// `memseg train`'s core on the reduced fixture model: the loss falls and the validation Dice of the two
/// shapes beats a floor. Floor: predicting the majority class (background) scores Dice 0 on both shapes;
/// a uniformly random label scores about 2·p·(1/3)/(p + 1/3) ≈ 0.2 for a class covering p ≈ 5-10% of the
/// pixels. 0.5 mean foreground Dice is well above both, and needs the shapes to be found where they are.
/// Then a checkpoint resumes (epochs continue) and the adapter file loads for inference.
#[test]
fn training_lowers_the_loss_and_beats_the_dice_floor_then_resumes() {
    let dir = std::env::temp_dir().join(format!("memseg-adapter-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    synthetic(&dir.join("data"), 40, 7);
    let fx = common::VideoFixture::open(&common::fixtures().join("tiny21_reduced_256.mid.video.safetensors"));
    let overrides: Vec<String> =
        fx.meta["hydra_overrides_extra"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_string()).collect();
    let out = dir.join("adapter.safetensors");
    let request = |epochs, resume| memseg::train::TrainRequest {
        weights: common::fixtures().join("tiny21_reduced_256.pt"),
        dataset: dir.join("data"),
        out: out.clone(),
        classes: None,
        size: None,
        rank: 8,
        epochs,
        learning_rate: 3e-3,
        batch: 2,
        val_fraction: 0.2,
        resume,
        seed: 1,
        overrides: overrides.clone(),
    };
    // MEMSEG_TRAIN_BACKEND=wgpu runs it on wgpu (to measure throughput there); Flex otherwise.
    let device = match std::env::var("MEMSEG_TRAIN_BACKEND").as_deref() {
        Ok("wgpu") => memseg::backend::init_native(memseg::backend::Preference::Wgpu).unwrap().device,
        _ => Device::flex(),
    };
    let start = std::time::Instant::now();
    let reports = memseg::train::run(&request(30, false), &device).unwrap();
    for r in &reports {
        eprintln!("epoch {}: loss {:.4}, val Dice {:?}, IoU {:?}, {:.1} images/s", r.epoch, r.loss, r.val_dice, r.val_iou, r.images_per_second);
    }
    eprintln!("trained in {:.1} s", start.elapsed().as_secs_f64());
    let (first, last) = (&reports[0], reports.last().unwrap());
    assert!(last.loss < 0.6 * first.loss, "loss {} -> {}", first.loss, last.loss);
    let fg = (last.val_dice[1] + last.val_dice[2]) / 2.0;
    assert!(fg > 0.5, "mean foreground Dice {fg:.3} (per class {:?})", last.val_dice);

    let resumed = memseg::train::run(&request(1, true), &device).unwrap();
    assert_eq!(resumed[0].epoch, 31);
    assert!(resumed[0].loss < first.loss);
    let (mut model, config) = reduced(&device);
    let set = AdapterSet::from_bytes(&std::fs::read(&out).unwrap(), "adapter", &mut model, &config).unwrap();
    assert_eq!(set.spec.classes, vec![0, 1, 2]);

    // Prompt-free segmentation of the images with the trained file (folded), as `memseg segment --adapter`.
    let seg = dir.join("seg");
    let report = memseg::adapter_segment::run(
        &common::fixtures().join("tiny21_reduced_256.pt"), &out, &[dir.join("data/images/039.png")], &seg, &overrides, &device,
    ).unwrap();
    let map = image::open(seg.join("039.png")).unwrap().to_luma8();
    assert_eq!(map.dimensions(), (64, 64));
    let truth = image::open(dir.join("data/labels/039.png")).unwrap().to_luma8();
    let agree = map.as_raw().iter().zip(truth.as_raw()).filter(|(a, b)| a == b).count() as f64 / 4096.0;
    eprintln!("segment --adapter: {:?}, pixel agreement with the truth {agree:.3}", report.slices);
    assert!(agree > 0.8, "pixel agreement {agree}");
    let _ = std::fs::remove_dir_all(&dir);
}
