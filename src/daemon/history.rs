//! `<model>.history.json` beside the outputs: the held-out perplexity of
//! every version of a model (a nanoGPT `ckpt.pt` rewritten at each eval
//! interval), oldest first, for the report's history chart and for
//! `<model>:best`: the version with the lowest perplexity of the first
//! requested type.

use std::path::Path;

use crate::durable::write_atomic;
use crate::quality::{QualityReport, VersionPoint};

/// Adds (or replaces) `version`'s point, measured by `q`'s `first_type`
/// (the reference's perplexity when that type was not measured), fills
/// `q.history`, and returns the best version. The history is advisory: a
/// file that cannot be read starts a new one, one that cannot be written
/// is said in the log.
pub(super) fn record(
    out_dir: &Path,
    model: &str,
    version: &str,
    first_type: &str,
    q: &mut QualityReport,
) -> Option<String> {
    let path = out_dir.join(format!("{model}.history.json"));
    let mut points: Vec<VersionPoint> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let ppl = q
        .types
        .iter()
        .find(|t| t.quality.file_type == first_type)
        .map_or(q.ppl_base, |t| t.quality.ppl);
    points.retain(|p| p.version != version);
    points.push(VersionPoint {
        version: version.to_owned(),
        ppl,
        best: false,
    });
    let best = mark_best(&mut points);
    match serde_json::to_vec_pretty(&points) {
        Ok(bytes) => {
            if let Err(e) = write_atomic(&path, &bytes) {
                tracing::warn!(file = %path.display(), "cannot write the version history: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot encode the version history: {e}"),
    }
    q.history = points;
    best
}

/// Marks the point with the lowest finite perplexity (the earliest on a
/// tie) and returns its version.
fn mark_best(points: &mut [VersionPoint]) -> Option<String> {
    let best = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.ppl.is_finite())
        .min_by(|(i, a), (j, b)| a.ppl.total_cmp(&b.ppl).then(i.cmp(j)))
        .map(|(i, _)| i);
    for (i, p) in points.iter_mut().enumerate() {
        p.best = Some(i) == best;
    }
    best.map(|i| points[i].version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(v: &str, ppl: f64) -> VersionPoint {
        VersionPoint {
            version: v.into(),
            ppl,
            best: false,
        }
    }

    #[test]
    fn the_lowest_finite_perplexity_is_best() {
        let mut p = vec![
            point("iter100", 60.0),
            point("iter200", 35.0),
            point("iter300", f64::NAN),
            point("iter400", 41.0),
        ];
        assert_eq!(mark_best(&mut p).as_deref(), Some("iter200"));
        assert_eq!(
            p.iter().map(|p| p.best).collect::<Vec<_>>(),
            [false, true, false, false]
        );
        assert_eq!(mark_best(&mut []), None);
    }
}
