//! `memseg eval`: FS-MedSAM2's evaluation protocol on a dataset of volumes with label volumes.
//!
//! Layout: `DATASET/images/<case>.nii[.gz]` and `DATASET/labels/<case>.nii[.gz]` (same file name, same grid).
//! Protocol (FS-MedSAM2, section 4): one case is the support (`--support-case`, default the first by name);
//! for each class its support slices are the centres of `k` equal parts of the class's z-range in that case
//! (k = 1: the middle slice), each keeping only that class. Every other case is a query: its slices from the
//! lowest to the highest slice holding any of the classes are segmented together (each class its own object,
//! one encoding per slice); a class is scored on the slices of its own z-range. Dice is pooled over all
//! scored slices of all query cases (2·TP / (P + G)), per class, then averaged over classes; per-case Dice is
//! reported too.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::GrayImage;
use serde::Serialize;

use crate::files::{load_inputs, load_model, read_label_volume};
use crate::imaging::labels::{ClassExtent, class_extents, distinct_labels};
use crate::imaging::{self, Volume, intensity};
use crate::job::{Outcome, StepEvent, track};
use crate::progress::Progress;
use crate::report::Overlap;
use crate::session::{MemoryOptions, Mode, Session, Support};

pub struct EvalRequest {
    pub weights: PathBuf,
    pub dataset: PathBuf,
    /// Label values to evaluate; default: every value of the support case's label volume.
    pub classes: Option<Vec<u8>>,
    pub support_case: Option<String>,
    pub supports_per_class: usize,
    pub mode: Mode,
    pub memory: MemoryOptions,
    pub intensity: Option<String>,
    pub modality: Option<imaging::Modality>,
    /// How the case images are read (the volume of 4-D NIfTI images, as in the Medical Segmentation Decathlon).
    pub read: imaging::ReadOptions,
    pub overrides: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub complete: bool,
    pub dataset: String,
    pub weights: String,
    pub mode: Mode,
    pub memory: MemoryOptions,
    pub intensity: intensity::IntensityInfo,
    pub classes: Vec<u8>,
    pub support_case: String,
    /// Per class, the support case's slices used as supports.
    pub support_slices: Vec<Vec<usize>>,
    pub cases: Vec<CaseReport>,
    /// Per class, pooled over the slices of every query case.
    pub dice: Vec<Option<f64>>,
    pub mean_dice: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub case: String,
    /// The query slices segmented: `[first, last]` of the classes' union z-range.
    pub slices: [usize; 2],
    pub dice: Vec<Option<f64>>,
    pub frames_encoded: usize,
    pub seconds: f64,
}

struct Case {
    name: String,
    image: PathBuf,
    label: PathBuf,
}

fn list_cases(dataset: &Path) -> Result<Vec<Case>, String> {
    let images = dataset.join("images");
    let labels = dataset.join("labels");
    let entries = std::fs::read_dir(&images).map_err(|e| format!("cannot list {}: {e} (expected DATASET/images and DATASET/labels)", images.display()))?;
    let mut cases = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", images.display()))?.path();
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(name) = file.strip_suffix(".nii.gz").or_else(|| file.strip_suffix(".nii")) else { continue };
        let label = labels.join(&file);
        if !label.is_file() {
            return Err(format!("{}: no label volume {}", path.display(), label.display()));
        }
        cases.push(Case { name: name.to_string(), image: path.clone(), label });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    if cases.len() < 2 {
        return Err(format!("{} holds {} case(s): evaluation needs a support case and at least one query case", images.display(), cases.len()));
    }
    Ok(cases)
}

/// The extent of `class` among a label volume's extents, if it is there.
fn extent_of(extents: &[ClassExtent], class: u8) -> Option<&ClassExtent> {
    extents.iter().find(|e| e.class == class)
}

fn load_case(case: &Case, req: &EvalRequest) -> Result<(Volume, Vec<Vec<u8>>), String> {
    let (mut image, modality) = (load_inputs(&[case.image.clone()], req.read)?, req.modality);
    if let Some(m) = modality {
        image.modality = m;
    }
    let labels = read_label_volume(&case.label, &image)?;
    Ok((image, labels))
}

pub fn run(req: &EvalRequest, device: &burn::tensor::Device) -> Result<EvalReport, String> {
    let started = Instant::now();
    let cases = list_cases(&req.dataset)?;
    let support_index = match &req.support_case {
        Some(name) => cases.iter().position(|c| &c.name == name).ok_or_else(|| format!("no case named {name} in {}", req.dataset.display()))?,
        None => 0,
    };
    let (support_image, support_labels) = load_case(&cases[support_index], req)?;
    let mapping = intensity::choose(&support_image, req.intensity.as_deref())?;
    let classes = match &req.classes {
        Some(c) => c.clone(),
        None => distinct_labels(support_labels.iter().flatten()),
    };
    let (support_slices, supports) = build_supports(&cases[support_index], &support_image, &support_labels, &classes, &mapping, req.supports_per_class)?;
    let (model, _) = load_model(&req.weights, &req.overrides, device)?;

    let mut pooled = vec![Overlap::default(); classes.len()];
    let mut reports = Vec::new();
    let mut intensity_info = None;
    for (_, case) in cases.iter().enumerate().filter(|(i, _)| *i != support_index) {
        eprintln!("case {} ({}/{})", case.name, reports.len() + 1, cases.len() - 1);
        let (report, overlaps, info) = eval_case(req, case, &model, &classes, &supports, &mapping)?;
        pooled.iter_mut().zip(overlaps).for_each(|(p, o)| p.add(o));
        intensity_info.get_or_insert(info);
        reports.push(report);
    }
    let dice: Vec<Option<f64>> = pooled.iter().map(Overlap::dice).collect();
    let scored: Vec<f64> = dice.iter().flatten().copied().collect();
    Ok(EvalReport {
        complete: true,
        dataset: req.dataset.display().to_string(),
        weights: req.weights.display().to_string(),
        mode: req.mode,
        memory: req.memory,
        intensity: intensity_info.expect("at least one query case"),
        classes,
        support_case: cases[support_index].name.clone(),
        support_slices,
        cases: reports,
        mean_dice: (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64),
        dice,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn build_supports(
    case: &Case,
    image: &Volume,
    labels: &[Vec<u8>],
    classes: &[u8],
    mapping: &intensity::Intensity,
    k: usize,
) -> Result<(Vec<Vec<usize>>, Vec<Support>), String> {
    let (slices, _) = intensity::to_rgb8_with_info(image, mapping)?;
    let (w, h) = (image.width as u32, image.height as u32);
    let extents = class_extents(labels);
    let mut chosen = Vec::new();
    let mut supports = Vec::new();
    for &class in classes {
        let extent = extent_of(&extents, class).ok_or_else(|| format!("{}: class {class} is absent from the support case", case.label.display()))?;
        let zs = extent.part_centres(k);
        for &z in &zs {
            let only: Vec<u8> = labels[z].iter().map(|&v| if v == class { class } else { 0 }).collect();
            let labels = GrayImage::from_raw(w, h, only).expect("slice size");
            supports.push(Support { name: format!("{}[{z}] class {class}", case.name), image: slices[z].clone(), labels });
        }
        chosen.push(zs);
    }
    Ok((chosen, supports))
}

fn eval_case(
    req: &EvalRequest,
    case: &Case,
    model: &crate::sam2::Sam2Base,
    classes: &[u8],
    supports: &[Support],
    mapping: &intensity::Intensity,
) -> Result<(CaseReport, Vec<Overlap>, intensity::IntensityInfo), String> {
    let started = Instant::now();
    let (image, labels) = load_case(case, req)?;
    let extents = class_extents(&labels);
    let ranges: Vec<Option<[usize; 2]>> = classes.iter().map(|&c| extent_of(&extents, c).map(|e| [e.first, e.last])).collect();
    let Some(first) = ranges.iter().flatten().map(|r| r[0]).min() else {
        return Err(format!("{}: none of the classes {classes:?} is labelled in this case", case.label.display()));
    };
    let last = ranges.iter().flatten().map(|r| r[1]).max().expect("some range");
    let (slices, info) = intensity::to_rgb8_with_info(&image, mapping)?;
    let query: Vec<_> = slices[first..=last].to_vec();
    let mut session = Session::new(query, classes.to_vec())?;
    for support in supports {
        session.add_support(support.clone())?;
    }
    let progress = Progress::new();
    let mut on_step = async |e: StepEvent<'_>| {
        progress.step(e.step, e.total, "segmenting slices");
        Ok(true)
    };
    let size = (image.width, image.height);
    let tracked = pollster::block_on(track(model, &session, req.mode, req.memory, size, false, &mut on_step))?;
    progress.finish();
    let Outcome::Done(result) = tracked else { unreachable!("eval never cancels") };
    let overlaps: Vec<Overlap> = classes
        .iter()
        .zip(&ranges)
        .map(|(&class, range)| {
            let mut o = Overlap::default();
            if let Some([z0, z1]) = range {
                for z in *z0..=*z1 {
                    o.add(Overlap::of(&result.labels[z - first], &labels[z], class));
                }
            }
            o
        })
        .collect();
    let report = CaseReport {
        case: case.name.clone(),
        slices: [first, last],
        dice: overlaps.iter().map(Overlap::dice).collect(),
        frames_encoded: result.frames_encoded,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, overlaps, info))
}

/// The report as a table for people: one row per case, Dice per class in percent, and the pooled row.
pub fn table(report: &EvalReport) -> String {
    let pct = |d: &Option<f64>| d.map_or("   -  ".to_string(), |d| format!("{:6.2}", d * 100.0));
    let mut out = format!("{:<24}", "case");
    for c in &report.classes {
        out += &format!(" {:>6}", format!("cls {c}"));
    }
    out += "\n";
    for case in &report.cases {
        out += &format!("{:<24}", case.case);
        for d in &case.dice {
            out += &format!(" {}", pct(d));
        }
        out += "\n";
    }
    out += &format!("{:<24}", "pooled Dice (%)");
    for d in &report.dice {
        out += &format!(" {}", pct(d));
    }
    out += &format!("\nmean Dice over classes: {}\n", pct(&report.mean_dice));
    out
}
