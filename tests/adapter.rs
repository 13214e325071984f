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
    let volume = memseg::segment::VolumeArgs {
        weights: common::fixtures().join("tiny21_reduced_256.pt"),
        frames: vec![dir.join("data/images/039.png")],
        intensity: None,
        modality: None,
        read: Default::default(),
        truth: None,
        out: seg.clone(),
        overwrite: false,
        overrides: overrides.clone(),
    };
    let request = memseg::segment::PromptFreeRequest { volume, adapter: out.clone() };
    let report = memseg::segment::run_prompt_free(&request, &device).unwrap();
    let map = image::open(seg.join("039.png")).unwrap().to_luma8();
    assert_eq!(map.dimensions(), (64, 64));
    let truth = image::open(dir.join("data/labels/039.png")).unwrap().to_luma8();
    let agree = map.as_raw().iter().zip(truth.as_raw()).filter(|(a, b)| a == b).count() as f64 / 4096.0;
    let memseg::segment::PromptFreeOutcome::Volume(report) = report else { panic!("one image is a volume of one slice") };
    eprintln!("segment --adapter: {:?} pixels per class, pixel agreement with the truth {agree:.3}", report.per_class.iter().map(|c| c.voxels).collect::<Vec<_>>());
    assert_eq!(report.outputs, ["039.png", "labels.nii.gz", "report.json"]);
    assert!(agree > 0.8, "pixel agreement {agree}");

    // Images of different sizes form no volume: each is segmented at its own size (any aspect ratio).
    let wide = image::imageops::resize(&image::open(dir.join("data/images/038.png")).unwrap().to_rgb8(), 96, 40, image::imageops::FilterType::Triangle);
    wide.save(dir.join("wide.png")).unwrap();
    let volume = memseg::segment::VolumeArgs {
        frames: vec![dir.join("data/images/039.png"), dir.join("wide.png")],
        out: dir.join("seg-images"),
        ..request.volume
    };
    let request = memseg::segment::PromptFreeRequest { volume, ..request };
    let memseg::segment::PromptFreeOutcome::Images(images) = memseg::segment::run_prompt_free(&request, &device).unwrap() else {
        panic!("images of two sizes are not a volume")
    };
    assert_eq!(images.outputs, ["039.png", "wide.png", "report.json"]);
    assert_eq!(image::open(dir.join("seg-images/wide.png")).unwrap().to_luma8().dimensions(), (96, 40));
    assert_eq!(image::open(dir.join("seg-images/039.png")).unwrap().to_luma8(), map, "the same map as alone");
    assert!(images.images[1].area_pixels.iter().sum::<usize>() > 0, "{:?}", images.images);
    let _ = std::fs::remove_dir_all(&dir);
}

// --- `memseg train` and `memseg segment --adapter` through the CLI: bad datasets and volumes ----------------

fn reduced_overrides() -> Vec<String> {
    let fx = common::VideoFixture::open(&common::fixtures().join("tiny21_reduced_256.mid.video.safetensors"));
    fx.meta["hydra_overrides_extra"].as_array().unwrap().iter().map(|o| format!("--override={}", o.as_str().unwrap())).collect()
}

/// Runs the CLI (Flex); returns (success, stderr).
fn memseg_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_memseg")).arg("--backend").arg("flex").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn train_cli(dataset: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let weights = common::fixtures().join("tiny21_reduced_256.pt");
    let overrides = reduced_overrides();
    let mut args = vec!["train", "--weights", weights.to_str().unwrap(), "--dataset", dataset.to_str().unwrap()];
    args.extend(["--out", out.to_str().unwrap(), "--epochs", "1", "--batch", "2"]);
    args.extend(overrides.iter().map(String::as_str));
    args.extend(extra);
    memseg_cli(&args)
}

fn save_grey(path: &std::path::Path, size: u32, value: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(size, size, |x, y| image::Luma([value(x, y)])).save(path).unwrap();
}

/// A dataset of `n` 64x64 pairs: a bright square (label 1) on a dark background.
fn squares(dir: &std::path::Path, n: usize) {
    for i in 0..n as u32 {
        let inside = move |x: u32, y: u32| (8 + 4 * i..40 + 4 * i).contains(&x) && (10..42).contains(&y);
        save_grey(&dir.join(format!("images/{i:02}.png")), 64, move |x, y| if inside(x, y) { 200 } else { 40 + ((x * 7 + y * 13) % 20) as u8 });
        save_grey(&dir.join(format!("labels/{i:02}.png")), 64, move |x, y| u8::from(inside(x, y)));
    }
}

/// Every file under `dir` (names), to check that a refused run wrote nothing.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect()).unwrap_or_default();
    names.sort();
    names
}

/// Each bad dataset is refused with a message naming the problem, a failing exit code, no panic, and no
/// adapter or state file (nor a `.tmp`) left behind.
#[test]
fn train_refuses_bad_datasets_with_clear_errors_and_writes_nothing() {
    let root = std::env::temp_dir().join(format!("memseg-train-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    type Setup = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Setup, Vec<&str>, &str)> = vec![
        ("no images folder", Box::new(|d| { squares(d, 2); std::fs::remove_dir_all(d.join("images")).unwrap(); }), vec![], "images is missing"),
        ("no labels folder", Box::new(|d| { squares(d, 2); std::fs::remove_dir_all(d.join("labels")).unwrap(); }), vec![], "labels is missing"),
        ("empty dataset", Box::new(|d| { std::fs::create_dir_all(d.join("images")).unwrap(); std::fs::create_dir_all(d.join("labels")).unwrap(); }), vec![], "the dataset is empty"),
        ("unpaired files", Box::new(|d| {
            squares(d, 3);
            std::fs::rename(d.join("labels/01.png"), d.join("labels/99.png")).unwrap();
        }), vec![], "2 file(s) without their pair (same name in images/ and labels/): images/01.png, labels/99.png"),
        ("size mismatch", Box::new(|d| { squares(d, 2); save_grey(&d.join("labels/01.png"), 32, |_, _| 0); }), vec![], "label size (32, 32) differs from its image's (64, 64)"),
        ("value beyond --classes", Box::new(|d| { squares(d, 2); save_grey(&d.join("labels/01.png"), 64, |x, _| if x < 8 { 2 } else { 0 }); }),
            vec!["--classes", "1"], "labels/01.png holds the value 2, not one of --classes [1]"),
        ("not label maps", Box::new(|d| { squares(d, 2); save_grey(&d.join("labels/01.png"), 64, |x, y| (x + y) as u8); }), vec![], "distinct values: not label maps"),
        ("only background", Box::new(|d| { squares(d, 2); for i in 0..2 { save_grey(&d.join(format!("labels/{i:02}.png")), 64, |_, _| 0); } }), vec![], "the labels hold no class"),
        ("unreadable PNG", Box::new(|d| { squares(d, 2); std::fs::write(d.join("images/01.png"), b"not a png at all").unwrap(); }), vec![], "cannot read"),
        ("colour label", Box::new(|d| {
            squares(d, 2);
            image::RgbImage::from_pixel(64, 64, image::Rgb([0, 1, 0])).save(d.join("labels/01.png")).unwrap();
        }), vec![], "a label map has one channel"),
        ("--size not a multiple of 32", Box::new(|d| squares(d, 2)), vec!["--size", "50,64"], "multiples of 32"),
        ("--resume without a checkpoint", Box::new(|d| squares(d, 2)), vec!["--resume"], "does not exist (train without --resume first)"),
    ];
    for (i, (name, setup, extra, expected)) in cases.iter().enumerate() {
        let case = root.join(format!("case{i}"));
        setup(&case.join("data"));
        let out = case.join("out/adapter.safetensors");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let (ok, stderr) = train_cli(&case.join("data"), &out, extra);
        eprintln!("{name}: {}", stderr.lines().last().unwrap_or(""));
        assert!(!ok, "{name}: memseg train succeeded");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: expected '{expected}' in: {stderr}");
        assert_eq!(files_in(out.parent().unwrap()), Vec::<String>::new(), "{name}: files left behind");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// `--resume` refuses a checkpoint that does not fit: a state file from another adapter, an adapter trained on
/// another image encoder, a dataset holding a class the checkpoint lacks. The checkpoint is left as it was.
#[test]
fn train_resume_refuses_mismatched_checkpoints() {
    let root = std::env::temp_dir().join(format!("memseg-train-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    squares(&root.join("data"), 3);
    let (a, b) = (root.join("a/adapter.safetensors"), root.join("b/adapter.safetensors"));
    for (out, rank) in [(&a, "8"), (&b, "4")] {
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let (ok, stderr) = train_cli(&root.join("data"), out, &["--rank", rank]);
        assert!(ok, "{stderr}");
    }
    let state = |p: &std::path::Path| std::path::PathBuf::from(format!("{}.state.safetensors", p.display()));
    let check = |name: &str, out: &std::path::Path, data: &std::path::Path, expected: &str| {
        let before: Vec<Vec<u8>> = [out.to_path_buf(), state(out)].iter().map(|p| std::fs::read(p).unwrap()).collect();
        let (ok, stderr) = train_cli(data, out, &["--resume"]);
        eprintln!("{name}: {}", stderr.lines().last().unwrap_or(""));
        assert!(!ok && !stderr.contains("panicked"), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: expected '{expected}' in: {stderr}");
        let after: Vec<Vec<u8>> = [out.to_path_buf(), state(out)].iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(before == after, "{name}: the checkpoint changed");
        assert_eq!(files_in(out.parent().unwrap()).len(), 2, "{name}: files left behind");
    };
    // The rank-4 run's optimiser state beside the rank-8 adapter.
    std::fs::copy(state(&b), state(&a)).unwrap();
    check("state of another adapter", &a, &root.join("data"), "does not belong to this adapter file");

    // An adapter whose recorded config is another image encoder (its metadata rewritten).
    let bytes = std::fs::read(&b).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap();
    let embed = config["image_encoder"]["trunk"]["embed_dim"].as_u64().expect("config.image_encoder.trunk.embed_dim");
    config["image_encoder"]["trunk"]["embed_dim"] = (embed * 2).into();
    header["__metadata__"]["config"] = config.to_string().into();
    let mut text = header.to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut rewritten = (text.len() as u64).to_le_bytes().to_vec();
    rewritten.extend(text);
    rewritten.extend(&bytes[8 + n..]);
    std::fs::write(&b, rewritten).unwrap();
    check("another encoder", &b, &root.join("data"), "trained on another image encoder");

    // A dataset with a class (2) the checkpoint (classes 0, 1) does not segment.
    let (ok, stderr) = train_cli(&root.join("data"), &root.join("c/adapter.safetensors"), &[]);
    assert!(!ok && stderr.contains("the folder") && stderr.contains("does not exist"), "{stderr}");
    std::fs::create_dir_all(root.join("c")).unwrap();
    let c = root.join("c/adapter.safetensors");
    assert!(train_cli(&root.join("data"), &c, &[]).0);
    save_grey(&root.join("data/labels/02.png"), 64, |x, _| if x < 8 { 2 } else { 0 });
    check("new class", &c, &root.join("data"), "holds the value 2, not one of the checkpoint's classes [1]");
    let _ = std::fs::remove_dir_all(&root);
}
