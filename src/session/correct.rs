//! Corrections after a run, as a user makes them in Meta's web demo: a finished propagation that kept every
//! memory ([`Session::keep_memories`](super::Session::keep_memories)) takes clicks and boxes on slices it
//! tracked, shows each correction's mask at once, then tracks the volume again from the corrected slices
//! outwards ([`Correctable::track_again`]), leaving the slices before them as they were.
//!
//! A correction is a [`SlicePrompt`] of the next round ([`Correctable::round`]): on its tracked slice it
//! attends to the memory bank and starts from the tracked mask, and the slice becomes a conditioning frame
//! (`propagate.rs`). What the page shows is therefore what a run given the same rounds from the start
//! computes (`memseg segment --points INDEX@ROUND=...`): the feedback is the replay's, step for step.

use super::propagate::PropagateRun;
use super::slice_prompt::SlicePrompt;
use super::{Run, RunKind};
use crate::sam2::sam2_base::SamOutput;

/// A finished propagation with every memory kept, taking corrections.
pub struct Correctable {
    run: Box<PropagateRun>,
    classes: Vec<u8>,
    /// The round corrections go to now: one more than the last round the run tracked.
    round: usize,
    /// This round's corrections as applied to the run's predictor: (sequence frame, object, prompt).
    pending: Vec<(usize, usize, SlicePrompt)>,
}

impl Run<'_> {
    /// The finished run, if it can take corrections: a propagation that kept every memory. `classes` are
    /// the session's and `last_round` the highest round of its prompts.
    pub fn into_correctable(self, classes: &[u8], last_round: usize) -> Option<Correctable> {
        match self.inner {
            RunKind::Propagate(run) if run.keeps_memories() && run.finished() => {
                Some(Correctable { run, classes: classes.to_vec(), round: last_round + 1, pending: Vec::new() })
            }
            _ => None,
        }
    }
}

impl Correctable {
    /// What a kept run holds per slice and class: the memory (`mem_dim x (S/16)^2` floats) and the mask
    /// logits (`(S/4)^2`), in bytes (0.33 MB at 512 px, 1.3 MB at 1024).
    pub fn memory_bytes(mem_dim: usize, image_size: usize) -> usize {
        (mem_dim * (image_size / 16).pow(2) + (image_size / 4).pow(2)) * 4
    }

    /// The round a correction must carry now.
    pub fn round(&self) -> usize {
        self.round
    }

    /// The corrections given since the last tracking, in the order given.
    pub fn pending(&self) -> Vec<SlicePrompt> {
        self.pending.iter().map(|(.., p)| p.clone()).collect()
    }

    /// A slice's correction for one class, the whole of it as the user has it now (its box, its clicks):
    /// returns the mask it gives. When it is the last correction of that slice and class with clicks added,
    /// only those run (one decoder run a click); otherwise the slice's correction starts again from the
    /// tracked mask.
    pub fn correct(&mut self, prompt: &SlicePrompt) -> Result<SamOutput, String> {
        if prompt.round != self.round {
            return Err(format!("slice {}: a correction of round {} given to a run expecting round {}", prompt.slice, prompt.round, self.round));
        }
        let [w, h] = self.run.slice_size();
        prompt.check(w, h)?;
        let object = self.object_of(prompt)?;
        let frame = self.run.frame_of(prompt.slice).ok_or_else(|| format!("slice {} is not in the volume", prompt.slice))?;
        let earlier = self.pending.iter().position(|(f, o, _)| (*f, *o) == (frame, object)).map(|i| self.pending.remove(i).2);
        let from = match earlier {
            Some(last) if last.continued_by(prompt) => last.clicks.len(),
            Some(_) => {
                self.run.predictor.discard_prompt(frame, object);
                0
            }
            None => 0,
        };
        let out = self.run.apply_correction(frame, object, prompt, from);
        if out.is_err() {
            // Nothing half-applied stays: the slice is as the run tracked it.
            self.run.predictor.discard_prompt(frame, object);
            return out;
        }
        self.pending.push((frame, object, prompt.clone()));
        out
    }

    /// Drops the correction of `slice` for `class`, if any: the slice is as the run tracked it.
    pub fn discard(&mut self, slice: usize, class: u8) {
        let Some(object) = self.classes.iter().position(|&c| c == class) else { return };
        let Some(frame) = self.run.frame_of(slice) else { return };
        self.pending.retain(|(f, o, _)| (*f, *o) != (frame, object));
        self.run.predictor.discard_prompt(frame, object);
    }

    /// Tracks again from the corrected slices outwards: a run whose steps are the re-tracked slices, which
    /// can be made correctable again when it has finished.
    pub fn track_again(mut self) -> Result<Run<'static>, String> {
        self.run.track_again(std::mem::take(&mut self.pending))?;
        Ok(Run { inner: RunKind::Propagate(self.run) })
    }

    fn object_of(&self, prompt: &SlicePrompt) -> Result<usize, String> {
        self.classes.iter().position(|&c| c == prompt.class).ok_or_else(|| {
            format!("slice {}: a correction for class {}, which the run did not segment (classes {:?})", prompt.slice, prompt.class, self.classes)
        })
    }
}
