//! `memseg train`: trains the prompt-free adaptation (`sam2::adapter`, `docs/adapters.md`) on a folder of
//! images and label maps, with the SAM2 base frozen. Native only (Burn autodiff).
//!
//! Dataset layout: `DIR/images/<stem>.png` and `DIR/labels/<stem>.png` (same stems; a label map is one
//! 8-bit channel, 0 = background, every other value a class). Every pair is resized to one training size
//! (`--size H,W`, default the first image's size rounded up to a multiple of 32; bilinear for images, nearest
//! for labels). The last `--val-fraction` of the stems (sorted) is the validation set.
//!
//! Per step: flips, 90° rotations (square sizes) and an intensity jitter (gain 0.8-1.2, offset -0.1-0.1 on
//! [0, 1]); loss = softmax cross-entropy + soft Dice (mean over classes) on the head's `[K, H/4, W/4]` logits
//! against the labels at the centre pixel of each 4x4 cell; Adam (beta 0.9 / 0.999, eps 1e-8) on the adapters,
//! the PEG and the class tokens only. After every epoch: validation Dice and IoU per class (argmax, same
//! grid), and a checkpoint: the adapter file itself (`--out`) and `<out>.state.safetensors` (Adam moments,
//! epoch), from which `--resume` continues.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData, activation};
use serde::Serialize;

use crate::progress::Progress;
use crate::sam2::adapter::{AdapterSet, AdapterSpec};
use crate::sam2::transforms::imagenet_planar;
use crate::sam2::{Sam2Base, Sam2Config};

/// One training pair at the training size: RGB bytes `[h, w, 3]` and class indices `[h, w]` (into
/// `spec.classes`).
#[derive(Clone, Debug)]
pub struct Sample {
    pub rgb: Vec<u8>,
    pub labels: Vec<u8>,
    pub size: [usize; 2],
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch: usize,
    pub augment: bool,
    pub seed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    /// Per class (background first), on the validation set.
    pub val_dice: Vec<f64>,
    pub val_iou: Vec<f64>,
    pub images_per_second: f64,
}

/// A small deterministic generator (splitmix64) for augmentation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Flips / rotation applied to an `[h, w, c]` array (rotation only for square arrays).
fn transform<T: Copy>(data: &[T], [h, w]: [usize; 2], c: usize, flip_h: bool, flip_v: bool, rot: bool) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for y in 0..h {
        for x in 0..w {
            let (mut sy, mut sx) = (y, x);
            if rot {
                (sy, sx) = (sx, h - 1 - sy);
            }
            if flip_v {
                sy = h - 1 - sy;
            }
            if flip_h {
                sx = w - 1 - sx;
            }
            let i = (sy * w + sx) * c;
            out.extend_from_slice(&data[i..i + c]);
        }
    }
    out
}

/// The model input `[1, 3, h, w]` (ImageNet-normalised) and the target class index of each 4x4 cell.
fn prepare(s: &Sample, rng: Option<&mut Rng>, device: &Device) -> (Tensor<4>, Vec<u8>) {
    let [h, w] = s.size;
    let (rgb, labels, gain, offset) = match rng {
        Some(rng) => {
            let (fh, fv) = (rng.uniform() < 0.5, rng.uniform() < 0.5);
            let rot = h == w && rng.uniform() < 0.5;
            let gain = 0.8 + 0.4 * rng.uniform();
            let offset = -0.1 + 0.2 * rng.uniform();
            (transform(&s.rgb, s.size, 3, fh, fv, rot), transform(&s.labels, s.size, 1, fh, fv, rot), gain, offset)
        }
        None => (s.rgb.clone(), s.labels.clone(), 1.0, 0.0),
    };
    let planar = imagenet_planar(&rgb, |v| (v * gain + offset).clamp(0.0, 1.0));
    let image = Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device);
    let (h4, w4) = (h / 4, w / 4);
    let target = (0..h4 * w4).map(|i| labels[((i / w4) * 4 + 2).min(h - 1) * w + ((i % w4) * 4 + 2).min(w - 1)]).collect();
    (image, target)
}

/// Cross-entropy + soft Dice of logits `[K, h, w]` against class indices.
pub fn loss(logits: Tensor<3>, target: &[u8]) -> Tensor<1> {
    let [k, h, w] = logits.dims();
    let device = logits.device();
    let mut onehot = vec![0f32; k * h * w];
    for (i, &t) in target.iter().enumerate() {
        onehot[t as usize * h * w + i] = 1.0;
    }
    let g: Tensor<2> = Tensor::from_data(TensorData::new(onehot, [k, h * w]), &device);
    let logits = logits.reshape([k, h * w]);
    let ce = (activation::log_softmax(logits.clone(), 0) * g.clone()).sum().neg().div_scalar((h * w) as f32);
    let p = activation::softmax(logits, 0);
    let inter = (p.clone() * g.clone()).sum_dim(1);
    let denom = p.sum_dim(1) + g.sum_dim(1);
    let dice = inter.mul_scalar(2.0).add_scalar(1.0) / denom.add_scalar(1.0);
    ce + dice.neg().add_scalar(1.0).mean()
}

/// Adam over every parameter that received a gradient, its state keyed by the parameter's module path.
#[derive(Default)]
pub struct Adam {
    pub lr: f64,
    pub step: usize,
    /// path -> (first moment, second moment), flattened, on the inner (non-autodiff) device.
    pub moments: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

struct AdamMapper<'a> {
    adam: &'a mut Adam,
    grads: &'a Gradients,
    path: Vec<String>,
}

impl ModuleMapper for AdamMapper<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let value = param.val();
        let Some(grad) = value.grad(self.grads) else { return param };
        let dims = value.dims();
        let n = dims.iter().product::<usize>();
        let g = grad.reshape([n]);
        let key = self.path.join(".");
        let (m, v) = self.adam.moments.remove(&key).unwrap_or_else(|| (g.zeros_like(), g.zeros_like()));
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
        let v = v.mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
        let t = self.adam.step as i32;
        let lr = self.adam.lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        let update = m.clone() / v.clone().sqrt().add_scalar(eps);
        let new = value.inner().reshape([n]) - update.mul_scalar(lr);
        self.adam.moments.insert(key, (m, v));
        Param::initialized(param.id, new.reshape(dims).autodiff().require_grad())
    }
}

impl Adam {
    fn step<M: Module>(&mut self, module: M, grads: &Gradients, root: &str) -> M {
        let mut mapper = AdamMapper { adam: self, grads, path: vec![root.to_string()] };
        module.map(&mut mapper)
    }
}

/// Trains `set` (attached to `model`, on an autodiff device) for `opts.epochs` more epochs starting at
/// `first_epoch`; `on_epoch` sees each epoch's report (checkpoints are written there).
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut Sam2Base,
    set: &mut AdapterSet,
    adam: &mut Adam,
    train: &[Sample],
    val: &[Sample],
    opts: &TrainOptions,
    first_epoch: usize,
    progress: &Progress,
    mut on_epoch: impl FnMut(&EpochReport, &Sam2Base, &AdapterSet, &Adam) -> Result<(), String>,
) -> Result<Vec<EpochReport>, String> {
    let device = model.device();
    let k = set.spec.classes.len();
    let mut rng = Rng::new(opts.seed ^ first_epoch as u64);
    let mut reports = Vec::new();
    for epoch in first_epoch..first_epoch + opts.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        progress.start(train.len(), &format!("epoch {}", epoch + 1));
        let start = std::time::Instant::now();
        let mut total = 0f64;
        for batch in order.chunks(opts.batch.max(1)) {
            let mut losses = Vec::new();
            for &i in batch {
                let (image, target) = prepare(&train[i], opts.augment.then_some(&mut rng), &device);
                losses.push(loss(set.logits(model, image), &target));
                progress.inc();
            }
            let l = Tensor::cat(losses, 0).mean();
            total += l.clone().into_scalar::<f32>() as f64 * batch.len() as f64;
            let grads = l.backward();
            adam.step += 1;
            let encoder = std::mem::take(&mut model.image_encoder.trunk.blocks);
            model.image_encoder.trunk.blocks = adam.step(encoder, &grads, "image_encoder.trunk.blocks");
            if let Some(peg) = model.image_encoder.trunk.peg.take() {
                model.image_encoder.trunk.peg = Some(adam.step(peg, &grads, "image_encoder.trunk.peg"));
            }
            set.head = adam.step(set.head.clone(), &grads, "head");
        }
        progress.finish();
        // The base must stay frozen: only adapters, the PEG and the class tokens may have moved.
        if let Some(k) = adam.moments.keys().find(|k| !(k.contains("adapter") || k.contains(".peg.") || k.contains("class_tokens"))) {
            return Err(format!("internal error: the frozen parameter {k} received a gradient"));
        }
        let seconds = start.elapsed().as_secs_f64();
        let (val_dice, val_iou) = evaluate(model, set, val, k, &device);
        let report = EpochReport {
            epoch: epoch + 1,
            loss: total / train.len().max(1) as f64,
            val_dice,
            val_iou,
            images_per_second: train.len() as f64 / seconds,
        };
        on_epoch(&report, model, set, adam)?;
        reports.push(report);
    }
    Ok(reports)
}

/// Dice and IoU per class (argmax of the logits against the labels of each 4x4 cell's centre), pooled over
/// the samples. A class absent from both prediction and truth scores 1.
pub fn evaluate(model: &Sam2Base, set: &AdapterSet, samples: &[Sample], k: usize, device: &Device) -> (Vec<f64>, Vec<f64>) {
    let (mut inter, mut pred, mut truth) = (vec![0f64; k], vec![0f64; k], vec![0f64; k]);
    for s in samples {
        let (image, target) = prepare(s, None, device);
        let logits = set.logits(model, image).inner();
        let [_, h, w] = logits.dims();
        let labels = logits.argmax(0).reshape([h * w]).into_data().convert::<i64>().try_into_vec::<i64>().unwrap_or_default();
        for (&p, &t) in labels.iter().zip(&target) {
            pred[p as usize] += 1.0;
            truth[t as usize] += 1.0;
            if p as usize == t as usize {
                inter[p as usize] += 1.0;
            }
        }
    }
    let dice = (0..k).map(|c| if pred[c] + truth[c] == 0.0 { 1.0 } else { 2.0 * inter[c] / (pred[c] + truth[c]) }).collect();
    let iou = (0..k).map(|c| {
        let union = pred[c] + truth[c] - inter[c];
        if union == 0.0 { 1.0 } else { inter[c] / union }
    }).collect();
    (dice, iou)
}

/// `memseg train` from the command line.
pub struct TrainRequest {
    pub weights: PathBuf,
    pub dataset: PathBuf,
    pub out: PathBuf,
    pub classes: Option<Vec<u8>>,
    pub size: Option<[usize; 2]>,
    pub rank: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch: usize,
    pub val_fraction: f64,
    pub resume: bool,
    pub seed: u64,
    pub overrides: Vec<String>,
}

fn read_png(path: &Path) -> Result<image::DynamicImage, String> {
    image::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The `.png` stems of a dataset folder (`images` or `labels`), sorted; a missing folder is named.
fn png_stems(dir: &Path, what: &str) -> Result<Vec<String>, String> {
    if !dir.is_dir() {
        return Err(format!("{} is missing: a dataset holds {what}/<name>.png for every image (see docs/adapters.md)", dir.display()));
    }
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
        .filter(|s| !s.starts_with('.'))
        .collect();
    stems.sort();
    Ok(stems)
}

/// The stems present in both folders; any image without a label or label without an image is an error
/// (naming up to 5 of them), since a silently dropped pair would bias training.
fn paired_stems(dir: &Path) -> Result<Vec<String>, String> {
    let images = png_stems(&dir.join("images"), "images")?;
    let labels = png_stems(&dir.join("labels"), "labels")?;
    if images.is_empty() {
        return Err(format!("{} holds no .png images: the dataset is empty", dir.join("images").display()));
    }
    let unpaired = |from: &[String], other: &[String], folder: &str| -> Vec<String> {
        from.iter().filter(|s| other.binary_search(s).is_err()).map(|s| format!("{folder}/{s}.png")).collect()
    };
    let mut alone = unpaired(&images, &labels, "images");
    alone.extend(unpaired(&labels, &images, "labels"));
    if !alone.is_empty() {
        let shown: Vec<&str> = alone.iter().take(5).map(String::as_str).collect();
        return Err(format!(
            "{}: {} file(s) without their pair (same name in images/ and labels/): {}{}",
            dir.display(), alone.len(), shown.join(", "), if alone.len() > 5 { ", ..." } else { "" }
        ));
    }
    Ok(images)
}

/// Reads `DIR/images/*.png` + `DIR/labels/*.png` at one size; returns the samples (labels as raw values).
fn read_dataset(dir: &Path, size: Option<[usize; 2]>) -> Result<(Vec<(String, image::RgbImage, image::GrayImage)>, [usize; 2]), String> {
    let mut out = Vec::new();
    let mut target = size;
    for stem in paired_stems(dir)? {
        let img = read_png(&dir.join("images").join(format!("{stem}.png")))?.to_rgb8();
        let label_path = dir.join("labels").join(format!("{stem}.png"));
        let lab = read_label(&label_path)?;
        if img.dimensions() != lab.dimensions() {
            return Err(format!("{}: label size {:?} differs from its image's {:?}", label_path.display(), lab.dimensions(), img.dimensions()));
        }
        let [h, w] = *target.get_or_insert_with(|| {
            let (w, h) = img.dimensions();
            [(h as usize).next_multiple_of(32), (w as usize).next_multiple_of(32)]
        });
        if h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 {
            return Err(format!("--size {h},{w}: both sides must be positive multiples of 32"));
        }
        let img = image::imageops::resize(&img, w as u32, h as u32, image::imageops::FilterType::Triangle);
        let lab = image::imageops::resize(&lab, w as u32, h as u32, image::imageops::FilterType::Nearest);
        out.push((stem, img, lab));
    }
    Ok((out, target.expect("at least one image")))
}

/// A label map: one channel of 8 or 16 bits whose values fit 0..=255, taken as they are (a colour image is
/// refused: its conversion to grey would invent classes; 16-bit values are not rescaled).
fn read_label(path: &Path) -> Result<image::GrayImage, String> {
    match read_png(path)? {
        image::DynamicImage::ImageLuma8(g) => Ok(g),
        image::DynamicImage::ImageLuma16(g) => {
            if let Some(v) = g.as_raw().iter().find(|&&v| v > 255) {
                return Err(format!("{}: holds the value {v}; label values must be 0..=255", path.display()));
            }
            let (w, h) = g.dimensions();
            image::GrayImage::from_raw(w, h, g.as_raw().iter().map(|&v| v as u8).collect()).ok_or_else(|| format!("{}: bad size", path.display()))
        }
        other => Err(format!("{}: a label map has one channel (class values), this is {:?}", path.display(), other.color())),
    }
}

/// Most classes (besides background) a dataset may hold: more means the label PNGs are not label maps.
pub const MAX_CLASSES: usize = crate::segment::MAX_CLASSES;

/// The classes to train (background 0 first): `--classes`, or the checkpoint's on `--resume`, or every value
/// found. Every label value must be one of them: a value outside them is refused rather than counted as
/// background, as it usually means the wrong folder or the wrong `--classes`.
fn choose_classes(pairs: &[(String, image::RgbImage, image::GrayImage)], asked: Option<&[u8]>, resumed: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut found = [false; 256];
    let mut first = [None::<&str>; 256];
    for (stem, _, lab) in pairs {
        for &v in lab.as_raw() {
            found[v as usize] = true;
            first[v as usize].get_or_insert(stem.as_str());
        }
    }
    let mut classes: Vec<u8> = match (asked, resumed) {
        (Some(a), Some(r)) if a.iter().filter(|&&c| c != 0).ne(r.iter().filter(|&&c| c != 0)) => {
            return Err(format!("--classes {a:?} differs from the classes {r:?} of the checkpoint being resumed"));
        }
        (_, Some(r)) => r.to_vec(),
        (Some(a), None) => a.to_vec(),
        (None, None) => (1..=255u8).filter(|&v| found[v as usize]).collect(),
    };
    classes.retain(|&c| c != 0);
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() && asked.is_some() {
        return Err("--classes names no class besides the background 0".into());
    }
    if classes.is_empty() {
        return Err("the labels hold no class: every label map is 0 (background) everywhere".into());
    }
    if classes.len() > MAX_CLASSES {
        return Err(format!("the labels hold {} distinct values: not label maps (at most {MAX_CLASSES} classes)", classes.len()));
    }
    if let Some(v) = (1..=255u8).find(|&v| found[v as usize] && !classes.contains(&v)) {
        let whose = if resumed.is_some() { "the checkpoint's classes" } else { "--classes" };
        return Err(format!("labels/{}.png holds the value {v}, not one of {whose} {classes:?} (0 = background)", first[v as usize].unwrap_or("?")));
    }
    classes.insert(0, 0);
    Ok(classes)
}

fn check_request(r: &TrainRequest) -> Result<(), String> {
    if !(r.learning_rate.is_finite() && r.learning_rate > 0.0) {
        return Err(format!("--lr {}: must be a positive number", r.learning_rate));
    }
    if !(0.0..1.0).contains(&r.val_fraction) {
        return Err(format!("--val-fraction {}: must be in [0, 1)", r.val_fraction));
    }
    if r.rank == 0 || r.batch == 0 {
        return Err("--rank and --batch must be at least 1".into());
    }
    // Checked up front, so that a training run does not end on a refusal to write its first checkpoint.
    let folder = r.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        return Err(format!("--out {}: the folder {} does not exist", r.out.display(), folder.display()));
    }
    if r.resume && !r.out.is_file() {
        return Err(format!("--resume: {} does not exist (train without --resume first)", r.out.display()));
    }
    Ok(())
}

pub fn run(request: &TrainRequest, device: &Device) -> Result<Vec<EpochReport>, String> {
    check_request(request)?;
    let (pairs, size) = read_dataset(&request.dataset, request.size)?;
    let weights = crate::sam2::weights::load_weights_file(&request.weights)?;
    let (model, config, _) = weights.into_model(&request.overrides, device)?;

    // The base is frozen, then the trained parts are attached (or loaded) and everything moves to the
    // autodiff device; only the trained parameters are tracked.
    let mut model = model.no_grad();
    let state_path = PathBuf::from(format!("{}.state.safetensors", request.out.display()));
    let resumed = if request.resume {
        let bytes = std::fs::read(&request.out).map_err(|e| format!("--resume: cannot read {}: {e}", request.out.display()))?;
        let set = AdapterSet::from_bytes(&bytes, &request.out.display().to_string(), &mut model, &config)
            .map_err(|e| format!("--resume: {e}"))?;
        let (adam, epoch) = load_state(&state_path, request.learning_rate, device)?;
        check_state(&adam, &bytes, &state_path)?;
        Some((set, adam, epoch))
    } else {
        None
    };
    let classes = choose_classes(&pairs, request.classes.as_deref(), resumed.as_ref().map(|(s, ..)| s.spec.classes.as_slice()))?;
    let index: HashMap<u8, u8> = classes.iter().enumerate().map(|(i, &c)| (c, i as u8)).collect();
    let samples: Vec<Sample> = pairs
        .iter()
        .map(|(_, img, lab)| Sample { rgb: img.as_raw().clone(), labels: lab.as_raw().iter().map(|v| index[v]).collect(), size })
        .collect();
    let n_val = ((samples.len() as f64 * request.val_fraction).round() as usize).min(samples.len().saturating_sub(1));
    let (train_set, val_set) = samples.split_at(samples.len() - n_val);
    let val_set = if val_set.is_empty() { train_set } else { val_set };

    let ad = device.clone().autodiff();
    let (mut set, mut adam, first_epoch) = match resumed {
        Some(r) => r,
        None => {
            let spec = AdapterSpec { rank: request.rank, ..AdapterSpec::new(classes.clone()) };
            let mut set = AdapterSet::attach(spec, &mut model, device);
            seeded_init(&mut model, &mut set, &mut Rng::new(request.seed), device);
            (set, Adam { lr: request.learning_rate, ..Default::default() }, 0)
        }
    };
    let mut model = model.fork(&ad).train();
    set.head = set.head.fork(&ad).train();
    let opts = TrainOptions { epochs: request.epochs, learning_rate: request.learning_rate, batch: request.batch, augment: true, seed: request.seed };
    let progress = Progress::new();
    let out = request.out.clone();
    train(&mut model, &mut set, &mut adam, train_set, val_set, &opts, first_epoch, &progress, |report, model, set, adam| {
        let per_class: Vec<String> = set.spec.classes.iter().zip(&report.val_dice).zip(&report.val_iou)
            .map(|((c, d), i)| format!("{c}: Dice {d:.3} IoU {i:.3}")).collect();
        eprintln!("epoch {}: loss {:.4}, {:.2} images/s, val {}", report.epoch, report.loss, report.images_per_second, per_class.join(", "));
        save_checkpoint(&out, &state_path, model, set, adam, &config, report.epoch)
    })
}

/// The optimiser state must belong to the adapter file it sits beside: every moment names one of the file's
/// tensors with its number of values (a state from another run would make Adam combine tensors of other shapes).
fn check_state(adam: &Adam, adapter: &[u8], state: &Path) -> Result<(), String> {
    let st = safetensors::SafeTensors::deserialize(adapter).map_err(|e| e.to_string())?;
    for (key, (m, _)) in &adam.moments {
        let want = st.tensor(key).map(|t| t.shape().iter().product::<usize>()).ok();
        if want != Some(m.dims()[0]) {
            return Err(format!("--resume: {} does not belong to this adapter file (its moment '{key}' matches no tensor of it)", state.display()));
        }
    }
    Ok(())
}

/// Reproducible initial values (Burn's initialisers draw from an unseeded generator): each adapter's `down`
/// uniform in ±1/sqrt(d) (Kaiming-uniform, as Burn's default), its bias zero; class tokens uniform in ±sqrt(3)
/// (unit variance). `up` and the PEG stay zero.
pub fn seeded_init(model: &mut Sam2Base, set: &mut AdapterSet, rng: &mut Rng, device: &Device) {
    let mut uniform = |shape: Vec<usize>, bound: f32| {
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * bound).collect();
        TensorData::new(values, shape)
    };
    for block in model.image_encoder.trunk.blocks.iter_mut() {
        for a in [block.attn.qkv_adapter.as_mut(), block.mlp_adapter.as_mut()].into_iter().flatten() {
            let [d, r] = a.down.weight.dims();
            a.down.weight = Param::from_tensor(Tensor::from_data(uniform(vec![d, r], 1.0 / (d as f32).sqrt()), device));
            a.down.bias = Some(Param::from_tensor(Tensor::zeros([r], device)));
        }
    }
    let dims = set.head.class_tokens.dims().to_vec();
    set.head.class_tokens = Param::from_tensor(Tensor::from_data(uniform(dims, 3f32.sqrt()), device));
}

/// Writes the adapter file and the optimizer state, each through a temporary file and a rename.
fn save_checkpoint(out: &Path, state: &Path, model: &Sam2Base, set: &AdapterSet, adam: &Adam, config: &Sam2Config, epoch: usize) -> Result<(), String> {
    let bytes = set.to_bytes(model, config)?;
    write_atomic(out, &bytes)?;
    let mut tensors: Vec<(String, Vec<f32>)> = Vec::new();
    for (key, (m, v)) in &adam.moments {
        for (suffix, t) in [("m", m), ("v", v)] {
            let values = t.clone().into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
            tensors.push((format!("{key}.{suffix}"), values));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, v)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![v.len()], bytemuck_f32(v)).expect("valid view")))
        .collect();
    let meta = HashMap::from([("epoch".to_string(), epoch.to_string()), ("step".to_string(), adam.step.to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())?;
    write_atomic(state, &bytes)
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no invalid bit patterns and u8 has alignment 1; the slice covers exactly v's bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn load_state(path: &Path, lr: f64, device: &Device) -> Result<(Adam, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--resume: cannot read {}: {e}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<usize>().ok()).ok_or_else(|| format!("{}: no \"{k}\"", path.display()));
    let (epoch, step) = (num("epoch")?, num("step")?);
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let inner = device.clone();
    let mut moments = HashMap::new();
    for (name, view) in st.iter() {
        let Some(key) = name.strip_suffix(".m") else { continue };
        let read = |v: safetensors::tensor::TensorView<'_>| {
            let values: Vec<f32> = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let n = values.len();
            Tensor::<1>::from_data(TensorData::new(values, [n]), &inner)
        };
        let v = st.tensor(&format!("{key}.v")).map_err(|e| format!("{}: {e}", path.display()))?;
        moments.insert(key.to_string(), (read(view), read(v)));
    }
    Ok((Adam { lr, step, moments }, epoch))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
}
