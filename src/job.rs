//! One volume job: the driver behind `memseg segment` (few-shot and prompt-free), `memseg eval` and the page.
//!
//! A [`Job`] takes a volume already read, its intensity mapping, the optional ground truth and one method's
//! inputs (few-shot prompts for the memory bank, or a prompt-free adapter); [`Job::run`] gives back a label map
//! per slice and the report, and on the way one [`StepEvent`] per step through an async callback that says
//! whether to go on. The callback is where front-ends differ: the CLI advances a progress bar (and drives the
//! job with `pollster::block_on`), the browser worker posts the slice to the page and yields to its event loop
//! so that a cancel gets through. Nothing here reads files or JavaScript values.

use image::{GrayImage, RgbImage};

use crate::imaging::Volume;
use crate::imaging::intensity::{self, Intensity};
use crate::imaging::labels::distinct_labels;
use crate::prompt_free::PromptFree;
use crate::report::{InputInfo, PROMPT_FREE_MODE, PromptFreeReport, RunReport, SegmentReport, class_reports};
use crate::sam2::Sam2Base;
use crate::session::bank_snapshot::StepBank;
use crate::session::feature_cache::SharedFeatureCache;
use crate::session::slice_prompt::SlicePrompt;
use crate::session::{Correctable, MemoryOptions, Mode, Run, Session, Support, label_map, read_f32};

/// A volume to segment and how.
pub struct Job<'a> {
    pub volume: &'a Volume,
    /// The model input's mapping ([`intensity::choose`]).
    pub mapping: Intensity,
    /// Label maps `[depth][h*w]` on the volume's grid: the report gets Dice and IoU.
    pub truth: Option<&'a [Vec<u8>]>,
    /// The weights' name, for the report.
    pub weights: String,
    pub method: Method<'a>,
}

pub enum Method<'a> {
    /// Masks and supports through SAM2's memory bank ([`crate::session`]).
    FewShot { model: &'a Sam2Base, prompts: Prompts },
    /// No prompt: the adapter's classes on every slice.
    PromptFree(&'a PromptFree),
}

/// The few-shot inputs: masks drawn on the volume's own slices and supports from anywhere.
pub struct Prompts {
    pub drawn: Vec<DrawnMask>,
    /// Clicks and boxes on the volume's slices: conditioning frames, after any mask drawn there.
    pub clicks: Vec<SlicePrompt>,
    /// Use the drawn masks as supports (inserted before `Placement`, or alone in [`Mode::SupportsOnly`]) rather
    /// than as conditioning frames on their own slices.
    pub drawn_as_supports: bool,
    /// Supports from other slices or volumes, already mapped to 8 bits ([`intensity::for_support`]).
    pub supports: Vec<Support>,
    /// Label values to segment; `None`: every value found in the masks and supports.
    pub classes: Option<Vec<u8>>,
    pub mode: Mode,
    pub memory: MemoryOptions,
    /// Keep each slice's low-resolution logits (`memseg segment --save-logits`).
    pub keep_logits: bool,
    /// Encoder features kept between runs of the same model (the page's re-runs); `None` encodes every slice.
    pub feature_cache: Option<SharedFeatureCache>,
    /// Keep a finished propagation with every memory, to take corrections ([`Finished::corrections`]).
    pub keep_for_corrections: bool,
}

/// Nothing given yet: propagation from the middle with SAM2's memory, nothing kept beyond the labels.
impl Default for Prompts {
    fn default() -> Self {
        Self {
            drawn: Vec::new(),
            clicks: Vec::new(),
            drawn_as_supports: false,
            supports: Vec::new(),
            classes: None,
            mode: Mode::Propagate(crate::session::Placement::Middle),
            memory: MemoryOptions::default(),
            keep_logits: false,
            feature_cache: None,
            keep_for_corrections: false,
        }
    }
}

/// A label map drawn on one slice of the volume; `name` is how messages and the report call it.
#[derive(Clone)]
pub struct DrawnMask {
    pub slice: usize,
    pub name: String,
    pub labels: GrayImage,
}

/// One step of a run: a slice's label map as soon as it is known.
pub struct StepEvent<'a> {
    /// 1-based; `total` steps in all (a slice may come twice in a propagation: the later one is final).
    pub step: usize,
    pub total: usize,
    pub slice: usize,
    /// Reached by the reverse pass of a propagation.
    pub reverse: bool,
    pub labels: &'a [u8],
    /// What each class's memory bank held at this step (few-shot only; the page's teaching view).
    pub bank: Option<&'a StepBank>,
}

/// How a run ended: done, or stopped by the callback after `steps` of `total` steps.
pub enum Outcome<T> {
    Done(T),
    Cancelled { steps: usize, total: usize },
}

/// A finished job.
pub struct Finished {
    /// `[depth][h*w]` label values at the slices' size.
    pub labels: Vec<Vec<u8>>,
    /// Per slice, the low-resolution logits `[classes * (S/4)^2]` when [`Prompts::keep_logits`].
    pub logits: Vec<Option<Vec<f32>>>,
    /// Its `outputs` are left for the caller, which knows what it writes.
    pub report: RunReport,
    /// Steps taken (slices produced, a drawn slice twice in a propagation) and the run's count of steps in
    /// all (a propagation's count includes the inserted supports' frames).
    pub steps: usize,
    pub total: usize,
    /// The finished propagation, ready for corrections, when [`Prompts::keep_for_corrections`] asked for it.
    pub corrections: Option<Corrections>,
}

/// A finished few-shot job that takes corrections ([`resume`]): the run with every memory, and its report.
pub struct Corrections {
    pub correctable: Correctable,
    report: SegmentReport,
}

impl Job<'_> {
    /// Runs the job to the end or until `on_step` answers `false`. `seconds` is the time the report gives
    /// (each front-end counts from where its user's wait began).
    pub async fn run(
        self,
        on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
        seconds: impl Fn() -> f64,
    ) -> Result<Outcome<Finished>, String> {
        let (slices, info) = intensity::to_rgb8_with_info(self.volume, &self.mapping)?;
        let base = ReportBase { input: InputInfo::of(self.volume, info), weights: self.weights, volume: self.volume, truth: self.truth };
        match self.method {
            Method::FewShot { model, prompts } => few_shot(model, prepare(slices, prompts)?, base, on_step, seconds).await,
            Method::PromptFree(pf) => prompt_free(pf, &slices, base, on_step, seconds).await,
        }
    }
}

/// What every report says of the job's inputs.
struct ReportBase<'a> {
    input: InputInfo,
    weights: String,
    volume: &'a Volume,
    truth: Option<&'a [Vec<u8>]>,
}

async fn few_shot(
    model: &Sam2Base,
    p: Prepared,
    base: ReportBase<'_>,
    on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
    seconds: impl Fn() -> f64,
) -> Result<Outcome<Finished>, String> {
    let size = (base.volume.width, base.volume.height);
    let t = match track(model, &p.session, p.mode, p.memory, size, p.keep_logits, on_step).await? {
        Outcome::Done(t) => t,
        Outcome::Cancelled { steps, total } => return Ok(Outcome::Cancelled { steps, total }),
    };
    let (classes, steps) = (p.session.classes.clone(), t.order.len());
    let report = SegmentReport {
        complete: true,
        input: base.input,
        weights: base.weights,
        mode: p.mode,
        memory: p.memory,
        per_class: class_reports(&t.labels, base.truth, &classes, base.volume),
        classes,
        supports: p.support_names,
        drawn_slices: p.drawn_slices,
        prompts: p.prompts,
        frames_encoded: t.frames_encoded,
        seconds: seconds(),
        outputs: Vec::new(),
        order: t.order,
    };
    let corrections = t.correctable.map(|correctable| Corrections { correctable, report: report.clone() });
    let report = RunReport::FewShot(report);
    Ok(Outcome::Done(Finished { labels: t.labels, logits: t.logits, report, steps, total: t.total, corrections }))
}

/// Tracks a corrected run again from its corrections ([`Correctable::track_again`]): only the slices that
/// change are computed and handed to `on_step`; `labels` are the finished job's label maps, updated. The
/// report is the finished one's with the corrections, the new steps and the new scores. `volume` and `truth`
/// are the job's.
pub async fn resume(
    kept: Corrections,
    mut labels: Vec<Vec<u8>>,
    volume: &Volume,
    truth: Option<&[Vec<u8>]>,
    on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
    seconds: impl Fn() -> f64,
) -> Result<Outcome<Finished>, String> {
    let Corrections { correctable, mut report } = kept;
    let corrections = correctable.pending();
    let last_round = correctable.round();
    let mut run = correctable.track_again()?;
    let total = run.total_steps();
    let mut order = Vec::new();
    let size = (volume.width, volume.height);
    if let Outcome::Cancelled { steps, total } = drive(&mut run, &report.classes, size, false, &mut labels, &mut Vec::new(), &mut order, on_step).await? {
        return Ok(Outcome::Cancelled { steps, total });
    }
    let steps = order.len();
    report.prompts.extend(corrections);
    report.order.extend(order);
    report.frames_encoded = run.frames_encoded();
    report.per_class = class_reports(&labels, truth, &report.classes, volume);
    report.seconds += seconds();
    let corrections = run.into_correctable(&report.classes, last_round).map(|correctable| Corrections { correctable, report: report.clone() });
    let logits = vec![None; labels.len()];
    Ok(Outcome::Done(Finished { labels, logits, report: RunReport::FewShot(report), steps, total, corrections }))
}

async fn prompt_free(
    pf: &PromptFree,
    slices: &[RgbImage],
    base: ReportBase<'_>,
    on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
    seconds: impl Fn() -> f64,
) -> Result<Outcome<Finished>, String> {
    let labels = match segment_each(pf, slices, on_step).await? {
        Outcome::Done(labels) => labels,
        Outcome::Cancelled { steps, total } => return Ok(Outcome::Cancelled { steps, total }),
    };
    let (classes, n) = (pf.foreground(), labels.len());
    let report = RunReport::PromptFree(PromptFreeReport {
        complete: true,
        input: base.input,
        weights: base.weights,
        adapter: pf.name.clone(),
        mode: PROMPT_FREE_MODE,
        order: (0..n).collect(),
        frames_encoded: n,
        seconds: seconds(),
        per_class: class_reports(&labels, base.truth, &classes, base.volume),
        classes,
        outputs: Vec::new(),
    });
    Ok(Outcome::Done(Finished { labels, logits: vec![None; n], report, steps: n, total: n, corrections: None }))
}

/// A few-shot session built from the prompts, with what the report says of them.
struct Prepared {
    session: Session,
    mode: Mode,
    memory: MemoryOptions,
    keep_logits: bool,
    support_names: Vec<String>,
    drawn_slices: Vec<usize>,
    prompts: Vec<SlicePrompt>,
}

fn prepare(slices: Vec<RgbImage>, p: Prompts) -> Result<Prepared, String> {
    if p.drawn.is_empty() && p.supports.is_empty() && p.clicks.is_empty() {
        return Err("no mask, no support and no click: draw a mask or click on at least one slice, or add a support".into());
    }
    let classes = p.classes.unwrap_or_else(|| {
        let maps = p.drawn.iter().map(|d| &d.labels).chain(p.supports.iter().map(|s| &s.labels));
        let prompted = p.clicks.iter().map(|c| &c.class);
        distinct_labels(maps.flat_map(|m| m.as_raw()).chain(prompted))
    });
    let mut session = Session::new(slices, classes)?;
    session.keep_memories(p.keep_for_corrections);
    if let Some(cache) = p.feature_cache {
        session.use_feature_cache(cache);
    }
    let (mut support_names, mut drawn_slices) = (Vec::new(), Vec::new());
    for drawn in p.drawn {
        if p.drawn_as_supports {
            session.add_slice_as_support(drawn.slice, &drawn.name, drawn.labels)?;
            support_names.push(drawn.name);
        } else {
            session.add_query_mask(drawn.slice, &drawn.name, drawn.labels)?;
            drawn_slices.push(drawn.slice);
        }
    }
    for support in p.supports {
        support_names.push(support.name.clone());
        session.add_support(support)?;
    }
    for prompt in &p.clicks {
        session.add_query_prompt(prompt.clone())?;
    }
    let prompts = p.clicks;
    Ok(Prepared { session, mode: p.mode, memory: p.memory, keep_logits: p.keep_logits, support_names, drawn_slices, prompts })
}

/// What tracking a session over its slices gives.
pub struct Tracked {
    /// `[slice][h*w]` label maps at the slices' size.
    pub labels: Vec<Vec<u8>>,
    pub logits: Vec<Option<Vec<f32>>>,
    /// Slices in the order they were produced.
    pub order: Vec<usize>,
    pub frames_encoded: usize,
    /// The run's count of steps ([`crate::session::Run::total_steps`]).
    pub total: usize,
    /// The finished propagation, when the session kept its memories for corrections.
    pub correctable: Option<Correctable>,
}

/// Runs `session` to the end, turning each slice's logits into a label map (at `size` = (width, height)) as
/// soon as it comes and handing it to `on_step`. `memseg eval` calls this directly on its query ranges.
pub async fn track(
    model: &Sam2Base,
    session: &Session,
    mode: Mode,
    memory: MemoryOptions,
    (width, height): (usize, usize),
    keep_logits: bool,
    on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
) -> Result<Outcome<Tracked>, String> {
    let n = session.num_slices();
    let mut run = session.start(model, mode, memory).await?;
    let total = run.total_steps();
    let mut t = Tracked { labels: vec![Vec::new(); n], logits: vec![None; n], order: Vec::new(), frames_encoded: 0, total, correctable: None };
    let size = (width, height);
    if let Outcome::Cancelled { steps, total } = drive(&mut run, &session.classes, size, keep_logits, &mut t.labels, &mut t.logits, &mut t.order, on_step).await? {
        return Ok(Outcome::Cancelled { steps, total });
    }
    if let Some(missing) = t.labels.iter().position(Vec::is_empty) {
        return Err(format!("slice {missing} was not reached by the propagation"));
    }
    t.frames_encoded = run.frames_encoded();
    // Kept when asked for: a run given corrections up front keeps its memories too, but only for itself.
    t.correctable = session.keeps_memories().then(|| run.into_correctable(&session.classes, session.last_round())).flatten();
    Ok(Outcome::Done(t))
}

/// Steps `run` to its end: each slice's logits become its label map (at `width` x `height`) in `labels`
/// (and its logits in `logits` when `keep_logits`), its index goes to `order`, and `on_step` sees it.
#[allow(clippy::too_many_arguments)]
async fn drive(
    run: &mut Run<'_>,
    classes: &[u8],
    (width, height): (usize, usize),
    keep_logits: bool,
    labels: &mut [Vec<u8>],
    logits: &mut Vec<Option<Vec<f32>>>,
    order: &mut Vec<usize>,
    on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
) -> Result<Outcome<()>, String> {
    let total = run.total_steps();
    while let Some(output) = run.step().await {
        let output = output?;
        let values = read_f32(output.at_size(height, width)).await?;
        let per_class: Vec<Vec<f32>> = values.chunks(width * height).map(<[f32]>::to_vec).collect();
        let map = label_map(&per_class, classes);
        if keep_logits {
            logits[output.slice] = Some(read_f32(burn::tensor::Tensor::cat(output.logits.clone(), 1)).await?);
        }
        order.push(output.slice);
        let event = StepEvent { step: order.len(), total, slice: output.slice, reverse: output.reverse, labels: &map, bank: Some(&output.bank) };
        let go_on = on_step(event).await?;
        labels[output.slice] = map;
        if !go_on {
            return Ok(Outcome::Cancelled { steps: order.len(), total });
        }
    }
    Ok(Outcome::Done(()))
}

/// Prompt-free: every slice on its own, in order.
async fn segment_each(
    pf: &PromptFree,
    slices: &[RgbImage],
    on_step: &mut impl AsyncFnMut(StepEvent<'_>) -> Result<bool, String>,
) -> Result<Outcome<Vec<Vec<u8>>>, String> {
    let total = slices.len();
    let mut labels = Vec::with_capacity(total);
    for (z, slice) in slices.iter().enumerate() {
        let map = pf.segment(slice).await?;
        let go_on = on_step(StepEvent { step: z + 1, total, slice: z, reverse: false, labels: &map, bank: None }).await?;
        labels.push(map);
        if !go_on {
            return Ok(Outcome::Cancelled { steps: z + 1, total });
        }
    }
    Ok(Outcome::Done(labels))
}
