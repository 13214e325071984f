//! The few-shot run's report (`report.json` of `memseg segment`, the browser's JSON export): inputs,
//! settings, and per class and slice the area, the volume in mL and, with a ground truth, Dice and IoU.
//! Shared by the CLI and the browser, so it compiles for wasm (no files, no clock).

use serde::Serialize;

use crate::imaging::{self, Volume, intensity};
use crate::session::slice_prompt::SlicePrompt;
use crate::session::{MemoryOptions, Mode};

/// `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentReport {
    /// Written last: a report without it (or no report) means the run did not finish.
    pub complete: bool,
    pub input: InputInfo,
    pub weights: String,
    pub mode: Mode,
    pub memory: MemoryOptions,
    pub classes: Vec<u8>,
    pub supports: Vec<String>,
    pub drawn_slices: Vec<usize>,
    /// Clicks and boxes given on query slices, as they conditioned the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<SlicePrompt>,
    /// Query slices in the order they were produced (a drawn slice can appear twice: both passes).
    pub order: Vec<usize>,
    /// Image-encoder runs: one per slice and support, whatever the number of classes.
    pub frames_encoded: usize,
    pub seconds: f64,
    pub per_class: Vec<ClassReport>,
    pub outputs: Vec<String>,
}

/// `report.json` of a prompt-free run (the CLI's and the browser's export): the few-shot report's inputs,
/// classes and per-class areas / volumes / Dice, with the adapter in place of supports and memory options.
#[derive(Debug, Serialize)]
pub struct PromptFreeReport {
    /// Written last: a report without it (or no report) means the run did not finish.
    pub complete: bool,
    pub input: InputInfo,
    pub weights: String,
    pub adapter: String,
    /// Always `"prompt_free"`: tells this report from a few-shot one.
    pub mode: &'static str,
    /// Label values segmented (background left out).
    pub classes: Vec<u8>,
    /// Slices in the order they were produced (each once).
    pub order: Vec<usize>,
    /// Image-encoder runs: one per slice.
    pub frames_encoded: usize,
    pub seconds: f64,
    pub per_class: Vec<ClassReport>,
    pub outputs: Vec<String>,
}

pub const PROMPT_FREE_MODE: &str = "prompt_free";

/// The report of any volume run, serialized as the report of its kind (no tag: each kind has its own `mode`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RunReport {
    FewShot(SegmentReport),
    PromptFree(PromptFreeReport),
}

impl RunReport {
    /// The files the report lists as written (filled by whoever writes them).
    pub fn outputs_mut(&mut self) -> &mut Vec<String> {
        match self {
            RunReport::FewShot(r) => &mut r.outputs,
            RunReport::PromptFree(r) => &mut r.outputs,
        }
    }

    /// The label values segmented, in the report's order.
    pub fn classes(&self) -> &[u8] {
        match self {
            RunReport::FewShot(r) => &r.classes,
            RunReport::PromptFree(r) => &r.classes,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InputInfo {
    pub source: String,
    pub slices: usize,
    pub width: usize,
    pub height: usize,
    pub spacing_mm: [f64; 3],
    pub modality: imaging::Modality,
    pub intensity: intensity::IntensityInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    pub class: u8,
    pub voxels: usize,
    pub volume_ml: f64,
    /// Over the whole volume, when a ground truth is given.
    pub dice: Option<f64>,
    pub iou: Option<f64>,
    /// The mean of the per-slice Dice over the slices that have one (the chart's legend); `dice` pools the
    /// slices instead, so large slices weigh more there.
    pub slice_dice_mean: Option<f64>,
    pub slices: Vec<SliceReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SliceReport {
    pub slice: usize,
    pub area_pixels: usize,
    pub area_mm2: f64,
    /// `None` when both the prediction and the truth are empty on this slice.
    pub dice: Option<f64>,
    pub iou: Option<f64>,
}

/// Overlap counts of one class, summed over slices (Dice pooled over slices, as FS-MedSAM2 reports it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Overlap {
    pub predicted: usize,
    pub truth: usize,
    pub both: usize,
}

impl Overlap {
    pub fn of(pred: &[u8], truth: &[u8], class: u8) -> Self {
        let mut o = Overlap::default();
        for (&p, &t) in pred.iter().zip(truth) {
            let (p, t) = (p == class, t == class);
            o.predicted += usize::from(p);
            o.truth += usize::from(t);
            o.both += usize::from(p && t);
        }
        o
    }

    pub fn add(&mut self, other: Overlap) {
        self.predicted += other.predicted;
        self.truth += other.truth;
        self.both += other.both;
    }

    pub fn dice(&self) -> Option<f64> {
        let denominator = self.predicted + self.truth;
        (denominator > 0).then(|| 2.0 * self.both as f64 / denominator as f64)
    }

    pub fn iou(&self) -> Option<f64> {
        let union = self.predicted + self.truth - self.both;
        (union > 0).then(|| self.both as f64 / union as f64)
    }
}

impl InputInfo {
    /// What the report says of a volume mapped with `intensity`.
    pub fn of(volume: &Volume, intensity: intensity::IntensityInfo) -> Self {
        InputInfo {
            source: volume.source.clone(),
            slices: volume.depth,
            width: volume.width,
            height: volume.height,
            spacing_mm: volume.spacing,
            modality: volume.modality,
            intensity,
        }
    }
}

/// Per class: the area of every slice and the volume (from the spacing), with Dice / IoU against `truth`
/// (label maps `[depth][h*w]` on the same grid) when given.
pub fn class_reports(labels: &[Vec<u8>], truth: Option<&[Vec<u8>]>, classes: &[u8], volume: &Volume) -> Vec<ClassReport> {
    let [sx, sy, sz] = volume.spacing;
    classes
        .iter()
        .map(|&class| {
            let mut total = Overlap::default();
            let slices: Vec<SliceReport> = labels
                .iter()
                .enumerate()
                .map(|(z, pred)| {
                    let o = match truth {
                        Some(t) => Overlap::of(pred, &t[z], class),
                        None => Overlap { predicted: pred.iter().filter(|&&v| v == class).count(), ..Default::default() },
                    };
                    total.add(o);
                    let has_truth = truth.is_some();
                    SliceReport {
                        slice: z,
                        area_pixels: o.predicted,
                        area_mm2: o.predicted as f64 * sx * sy,
                        dice: o.dice().filter(|_| has_truth),
                        iou: o.iou().filter(|_| has_truth),
                    }
                })
                .collect();
            ClassReport {
                class,
                voxels: total.predicted,
                volume_ml: total.predicted as f64 * sx * sy * sz / 1000.0,
                dice: total.dice().filter(|_| truth.is_some()),
                iou: total.iou().filter(|_| truth.is_some()),
                slice_dice_mean: mean(slices.iter().filter_map(|s| s.dice)),
                slices,
            }
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_gives_dice_and_iou() {
        let o = Overlap::of(&[1, 1, 0, 2], &[1, 0, 1, 2], 1);
        assert_eq!(o, Overlap { predicted: 2, truth: 2, both: 1 });
        assert_eq!(o.dice(), Some(0.5));
        assert_eq!(o.iou(), Some(1.0 / 3.0));
        assert_eq!(Overlap::of(&[0, 0], &[0, 0], 1).dice(), None);
    }

    #[test]
    fn slice_dice_mean_skips_slices_without_dice() {
        assert_eq!(mean([0.5, 1.0].into_iter()), Some(0.75));
        assert_eq!(mean(std::iter::empty()), None);
    }
}
