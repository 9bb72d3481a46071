//! Quality in the pipeline: which text a drop is measured on, the budget a
//! published file must keep, the `auto` choice of type, and the report page
//! and table that show the trade-off.
//!
//! The numbers themselves come from the evaluator (`kvant eval`); this
//! module only decides and presents, so all of it is pure.
//!
//! * [`find_text`] — held-out and calibration texts beside a drop.
//! * [`Budget::judge`] — the gate ([`Verdict`]), defaults justified from
//!   llama.cpp's published figures.
//! * [`AutoSearch`] — `types = ["auto"]`, a bisection over the mixes.
//! * [`QualityReport::render_html`] — `<model>.report.html`;
//!   [`render_table`] and [`modelfile_comment`] — the same as text.

mod budget;
mod chart;
mod choose;
mod measure;
mod page;
mod summary;
mod texts;

pub use budget::{Budget, Verdict, DEFAULT_MAX_KLD, DEFAULT_MAX_PPL_INCREASE, MIN_SAME_TOP_P};
pub use choose::{AutoSearch, Candidate, Outcome, AUTO_CANDIDATES};
pub use measure::TypeQuality;
pub use page::{MeasuredType, QualityReport, VersionPoint};
pub use summary::{modelfile_comment, render_candidates, render_table};
pub use texts::{find_text, TextRole, TextSource};
