//! Progress on stderr for every long command (`train`, `pretrain`, `eval`,
//! `predict`, `bench`), in one place: an `indicatif` bar when stderr is a
//! terminal; otherwise (a log file, a pipe) plain lines with no carriage
//! return and no escape sequence: one at the first update, then at most one
//! every [`PLAIN_EVERY`], and one at the end.

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two plain progress lines.
pub const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// A count of `unit`s (steps, images, benchmarks) towards a known total,
/// with the figures of the latest update (loss, learning rate, speed).
pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    /// Where the count started (a resumed run's steps done), for the speed.
    start: u64,
    output: Output,
}

enum Output {
    /// An `indicatif` bar on the terminal.
    Bar,
    /// Plain lines; when the last one was printed (None: not yet).
    Plain(Mutex<Option<Instant>>),
    /// Nothing but [`Progress::println`]'s lines.
    Off,
}

impl Progress {
    /// A count of `total` `unit`s under `label` (e.g. "train") that starts
    /// at `done` (a resumed run's steps): a bar on a terminal, plain lines
    /// elsewhere.
    pub fn new(label: &str, total: usize, done: usize, unit: &'static str) -> Progress {
        let start = done as u64;
        // Set up hidden, shown on a terminal once it has its label and count.
        let bar = ProgressBar::hidden();
        bar.set_length(total as u64);
        bar.set_position(start);
        bar.set_prefix(label.to_string());
        let output = if std::io::stderr().is_terminal() {
            let template = format!("{{prefix:.bold}} [{{bar:24.cyan/blue}}] {{pos}}/{{len}} {unit}  {{msg}}  {{left}}");
            // The template is a constant of this function: a typo is a bug, not a user error.
            let style = ProgressStyle::with_template(&template)
                .expect("valid progress template")
                .progress_chars("#>.")
                .with_key("left", move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    if let Some(left) = time_left(state.pos(), state.len().unwrap_or(0), start, state.elapsed()) {
                        let _ = write!(out, "{} left", HumanDuration(left));
                    }
                });
            bar.set_style(style);
            bar.set_draw_target(ProgressDrawTarget::stderr());
            Output::Bar
        } else {
            Output::Plain(Mutex::new(None))
        };
        Progress { bar, label: label.to_string(), unit, start, output }
    }

    /// No progress output; [`Progress::println`] still prints.
    pub fn off() -> Progress {
        Progress { bar: ProgressBar::hidden(), label: String::new(), unit: "", start: 0, output: Output::Off }
    }

    /// Moves the count to `done`; `figures` (when given) replace the
    /// figures shown beside it.
    pub fn set(&self, done: usize, figures: Option<String>) {
        self.bar.set_position(done as u64);
        if let Some(figures) = figures {
            self.bar.set_message(figures);
            self.plain_line(false);
        }
    }

    /// Counts `n` more, showing the speed in `unit`s per second.
    pub fn add(&self, n: usize) {
        self.bar.inc(n as u64);
        self.bar.set_message(format!("{:.1} {}/s", self.per_second(), self.unit));
        self.plain_line(false);
    }

    /// `unit`s counted by this process per second of its work so far.
    pub fn per_second(&self) -> f64 {
        (self.bar.position() - self.start) as f64 / self.bar.elapsed().as_secs_f64().max(1e-9)
    }

    /// Prints `line` on its own (above the bar on a terminal).
    pub fn println(&self, line: &str) {
        match self.output {
            Output::Bar => self.bar.println(line),
            Output::Plain(_) | Output::Off => eprintln!("{line}"),
        }
    }

    /// Clears the bar and prints the count's last line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        match self.output {
            Output::Bar => eprintln!("{}", self.text(true)),
            Output::Plain(_) => self.plain_line(true),
            Output::Off => {}
        }
    }

    /// `train: 23/560 steps | epoch 1/5, loss 0.4512, ... | 3 minutes left`,
    /// or at the end `train: 560/560 steps in 4 minutes | ...`.
    fn text(&self, done: bool) -> String {
        let mut text =
            format!("{}: {}/{} {}", self.label, self.bar.position(), self.bar.length().unwrap_or(0), self.unit);
        if done {
            text.push_str(&format!(" in {}", HumanDuration(self.bar.elapsed())));
        }
        let message = self.bar.message();
        if !message.is_empty() {
            text.push_str(&format!(" | {message}"));
        }
        let (position, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        if let Some(left) = time_left(position, total, self.start, self.bar.elapsed()).filter(|_| !done) {
            text.push_str(&format!(" | {} left", HumanDuration(left)));
        }
        text
    }

    /// Plain output: prints the current line when it is the first, `last`,
    /// or [`PLAIN_EVERY`] after the previous one; a full count waits for the
    /// last line.
    fn plain_line(&self, last: bool) {
        let Output::Plain(printed) = &self.output else { return };
        if !last && self.bar.length().is_some_and(|total| self.bar.position() >= total) {
            return;
        }
        let mut printed = printed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last || printed.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
            eprintln!("{}", self.text(last));
            *printed = Some(Instant::now());
        }
    }
}

impl Drop for Progress {
    /// A count that ends early (an error) leaves its bar where it stopped,
    /// so that the error line starts on a line of its own.
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

/// The time the rest of `total` takes at the mean speed since `start` (None
/// before anything was counted).
fn time_left(position: u64, total: u64, start: u64, elapsed: Duration) -> Option<Duration> {
    let counted = position.checked_sub(start).filter(|&n| n > 0)?;
    Some(elapsed.mul_f64(total.saturating_sub(position) as f64 / counted as f64))
}

/// The figures of a training step: `epoch 2/5, loss 0.4512, lr 2.00e-3, 180.2 img/s`.
pub fn step_figures(epoch: usize, epochs: usize, loss: f64, lr: f32, rate: f64, rate_unit: &str) -> String {
    format!("epoch {}/{epochs}, loss {loss:.4}, lr {lr:.2e}, {rate:.1} {rate_unit}", epoch + 1)
}
