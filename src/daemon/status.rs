//! `kvant status`: the journal as a table.

use std::path::Path;

use super::state::{State, Step};
use super::DaemonError;

/// The table of drops, their steps, models and errors.
pub fn render_status(state_dir: &Path) -> Result<String, DaemonError> {
    let st = State::load(state_dir)?;
    if st.drops.is_empty() {
        return Ok(format!("no drops recorded in {}\n", state_dir.display()));
    }
    let mut out = format!(
        "{:<32} {:<12} {:<24} {:<14} {}\n",
        "DROP", "STEP", "MODEL", "VERSION", "DETAIL"
    );
    let mut rows: Vec<_> = st.drops.iter().collect();
    rows.sort_by_key(|(_, r)| r.seq);
    for (name, r) in rows {
        let step = format!("{:?}", r.step).to_lowercase();
        let detail = match (&r.step, &r.error) {
            (Step::Failed, Some(e)) => e.clone(),
            (_, Some(e)) => format!("retrying: {e}"),
            (Step::Registered, None) => r
                .outputs
                .iter()
                .flat_map(|o| o.tags.first().cloned())
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<32} {:<12} {:<24} {:<14} {}\n",
            name,
            step,
            r.model.as_deref().unwrap_or("-"),
            r.version_label.as_deref().unwrap_or("-"),
            detail.replace('\n', " ")
        ));
    }
    Ok(out)
}
