//! A progress bar for long one-shot commands (hidden when stderr is not a
//! terminal, so services and scripts get clean logs).

use indicatif::{ProgressBar, ProgressStyle};

use kvant::convert::Progress;
use kvant::eval::ChunkProgress;

/// A terminal progress bar counting tensors.
pub struct TensorBar {
    bar: ProgressBar,
}

impl TensorBar {
    /// A bar with the given label.
    pub fn new(label: &str) -> TensorBar {
        let bar = ProgressBar::new(0);
        let style =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tensors {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        TensorBar { bar }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for TensorBar {
    fn start(&self, total: usize) {
        self.bar.set_length(total as u64);
    }

    fn tensor_done(&self, name: &str) {
        self.bar.set_message(name.to_owned());
        self.bar.inc(1);
    }
}

/// A terminal progress bar counting chunks, with the running perplexity.
pub struct ChunkBar {
    bar: ProgressBar,
}

impl ChunkBar {
    /// A bar with the given label.
    pub fn new(label: &str) -> ChunkBar {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} chunks {elapsed} (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        ChunkBar { bar }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl ChunkProgress for ChunkBar {
    fn start(&self, n_chunks: usize) {
        self.bar.set_length(n_chunks as u64);
    }

    fn chunk_done(&self, _index: usize, ppl: f64) {
        self.bar.set_message(format!("PPL {ppl:.4}"));
        self.bar.inc(1);
    }
}
