//! Progress bars for long CLI work (on stderr; hidden when stderr is not a terminal, so logs stay clean).

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        Self { bar: ProgressBar::hidden() }
    }

    /// A new bar of `total` steps, replacing the previous one.
    pub fn start(&self, total: usize, message: &str) {
        self.bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.set_length(total as u64);
        self.bar.set_position(0);
        self.bar.set_message(message.to_string());
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> ");
        self.bar.set_style(style);
    }

    /// One step of a volume job done ([`crate::job::StepEvent`]): the bar starts at the first step, when the
    /// number of steps is known.
    pub fn step(&self, step: usize, total: usize, message: &str) {
        if step == 1 {
            self.start(total, message);
        }
        self.inc();
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
