//! `<model>.report.html`: the size-versus-quality picture of one drop —
//! bits per weight against KLD and against perplexity for every measured
//! type, the budget drawn as a line, the published types marked, the
//! chosen one highlighted, the table underneath, and (for a checkpoint
//! rewritten during training) held-out perplexity per version. One file,
//! inline SVG and CSS, nothing fetched, no scripts.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::chart::{escape, short, Chart, HLine, Point};
use super::{Budget, TypeQuality, Verdict};

/// One measured type as the page and the table show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredType {
    /// The numbers.
    #[serde(flatten)]
    pub quality: TypeQuality,
    /// The gate's verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Registered with Ollama.
    pub published: bool,
    /// Picked by `auto`.
    pub chosen: bool,
}

/// One version of a drop in the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionPoint {
    /// The version (nanoGPT's `iter_num`, else a content hash).
    pub version: String,
    /// Held-out perplexity of the version's first requested type.
    pub ppl: f64,
    /// `<model>:best` points at it.
    pub best: bool,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// The Ollama model name.
    pub model: String,
    /// This version.
    pub version: Option<String>,
    /// The held-out text's file name.
    pub text: String,
    /// Tokens scored.
    pub n_tokens: usize,
    /// The full-precision reference's perplexity.
    pub ppl_base: f64,
    /// The gate's budget.
    pub budget: Budget,
    /// The calibration text, when an importance matrix was used.
    pub imatrix_text: Option<String>,
    /// Every measured type, smallest first.
    pub types: Vec<MeasuredType>,
    /// Held-out perplexity per version, oldest first (empty or one entry
    /// for a drop seen once).
    pub history: Vec<VersionPoint>,
    /// `auto`'s candidates, measured or ruled out, with why each was or
    /// was not chosen (empty without `auto`).
    #[serde(default)]
    pub candidates: Vec<super::Candidate>,
}

const STYLE: &str = r#"
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1260px;padding:0 1em;color:#1d2430;background:#fff}
h1{font-size:1.5em;margin:.2em 0}.sub{color:#5a6577;margin:0 0 1.2em}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg.chart{border:1px solid #dde2ea;border-radius:6px;background:#fbfcfe;max-width:100%;height:auto}
svg .title{font-weight:600;font-size:14px;fill:#1d2430}
svg .axis{stroke:#8993a4}svg .grid{stroke:#e6e9ef}
svg .tick,svg .axis-label,svg .line-label{font-size:11px;fill:#5a6577}
svg line.budget{stroke:#c0392b;stroke-width:1.5;stroke-dasharray:6 4}svg .line-label.budget{fill:#c0392b}
svg line.reference{stroke:#2c7a4b;stroke-width:1;stroke-dasharray:2 3}svg .line-label.reference{fill:#2c7a4b}
svg .trend{fill:none;stroke:#3d6fb6;stroke-width:1.5}
svg .point circle{fill:#fff;stroke:#7a8598;stroke-width:2}svg .point text{font-size:11px;fill:#3a4352}
svg .point.published circle{fill:#3d6fb6;stroke:#3d6fb6}
svg .point.over circle,svg .point.broken circle{stroke:#c0392b}
svg .point.chosen circle{fill:#f0b429;stroke:#1d2430;stroke-width:2.5}svg .point.chosen text{font-weight:700}
svg .point.best circle{fill:#f0b429;stroke:#1d2430}
table{border-collapse:collapse;margin-top:1.4em;font-variant-numeric:tabular-nums}
th,td{padding:.35em .8em;border-bottom:1px solid #e6e9ef;text-align:right}th{background:#f2f4f8}
td{white-space:nowrap}td:first-child,th:first-child,td.verdict,th:last-child{text-align:left}td.verdict{white-space:normal}
tr.chosen td{background:#fff6dd;font-weight:600}tr.over td.verdict,tr.broken td.verdict{color:#c0392b}
.legend{color:#5a6577;font-size:13px;margin-top:.6em}
"#;

impl QualityReport {
    fn class_of(t: &MeasuredType) -> Vec<&'static str> {
        let mut c = Vec::new();
        if t.published {
            c.push("published");
        }
        if t.chosen {
            c.push("chosen");
        }
        match t.verdict {
            Verdict::Pass => {}
            Verdict::OverBudget { .. } => c.push("over"),
            Verdict::Broken { .. } => c.push("broken"),
        }
        c
    }

    fn type_points(&self, y: impl Fn(&TypeQuality) -> f64) -> Vec<Point> {
        self.types
            .iter()
            .map(|t| Point {
                label: t.quality.file_type.to_ascii_uppercase(),
                x: t.quality.bits_per_weight,
                y: y(&t.quality),
                classes: Self::class_of(t),
            })
            .collect()
    }

    /// Bits per weight against mean KLD, the budget as a line.
    pub fn kld_chart(&self) -> Chart {
        Chart {
            title: "Damage against size: mean KL-divergence".into(),
            x_label: "bits per weight".into(),
            y_label: "mean KLD (log)".into(),
            log_y: true,
            connect: false,
            x_categories: None,
            points: self.type_points(|q| q.kld_mean),
            lines: vec![HLine {
                y: self.budget.max_kld,
                label: format!("budget {}", short(self.budget.max_kld)),
                class: "budget",
            }],
        }
    }

    /// Bits per weight against perplexity, the reference and the budget
    /// as lines.
    pub fn ppl_chart(&self) -> Chart {
        Chart {
            title: format!("Perplexity on {}", self.text),
            x_label: "bits per weight".into(),
            y_label: "perplexity".into(),
            log_y: false,
            connect: false,
            x_categories: None,
            points: self.type_points(|q| q.ppl),
            lines: vec![
                HLine {
                    y: self.ppl_base,
                    label: format!("full precision {}", short(self.ppl_base)),
                    class: "reference",
                },
                HLine {
                    y: self.ppl_base * (1.0 + self.budget.max_ppl_increase / 100.0),
                    label: format!("budget +{} %", self.budget.max_ppl_increase),
                    class: "budget",
                },
            ],
        }
    }

    /// Held-out perplexity per version, or `None` for a drop seen once.
    pub fn history_chart(&self) -> Option<Chart> {
        (self.history.len() > 1).then(|| Chart {
            title: "Training run: held-out perplexity per version".into(),
            x_label: "version".into(),
            y_label: "perplexity".into(),
            log_y: false,
            connect: true,
            x_categories: Some(self.history.iter().map(|v| v.version.clone()).collect()),
            points: self
                .history
                .iter()
                .enumerate()
                .map(|(i, v)| Point {
                    label: if v.best {
                        format!("{} (best)", v.version)
                    } else {
                        v.version.clone()
                    },
                    x: i as f64,
                    y: v.ppl,
                    classes: if v.best {
                        vec!["version", "best"]
                    } else {
                        vec!["version"]
                    },
                })
                .collect(),
            lines: Vec::new(),
        })
    }

    /// The whole page.
    pub fn render_html(&self) -> String {
        let mut h = String::new();
        let title = format!("kvant: {}", self.model);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>",
            escape(&title)
        );
        let _ = write!(h, "<h1>{}</h1>", escape(&self.model));
        let mut sub = format!(
            "Measured against the full-precision model on {} ({} tokens, PPL {}).",
            self.text,
            self.n_tokens,
            short(self.ppl_base)
        );
        if let Some(v) = &self.version {
            sub = format!("Version {v}. {sub}");
        }
        match &self.imatrix_text {
            Some(t) => sub.push_str(&format!(" Importance matrix from {t}.")),
            None => sub.push_str(" No importance matrix."),
        }
        let _ = write!(h, "<p class=\"sub\">{}</p>", escape(&sub));
        h.push_str("<div class=\"charts\">");
        h.push_str(&self.kld_chart().render());
        h.push_str(&self.ppl_chart().render());
        if let Some(c) = self.history_chart() {
            h.push_str(&c.render());
        }
        h.push_str("</div>");
        h.push_str("<p class=\"legend\">Filled: published to Ollama · hollow: not published · gold: chosen by <code>auto</code> · dashed red: the budget.</p>");
        h.push_str(&self.table_html());
        h.push_str(&self.candidates_html());
        h.push_str("</body></html>\n");
        h
    }

    /// `auto`'s search: every candidate and why it was or was not chosen.
    fn candidates_html(&self) -> String {
        if self.candidates.is_empty() {
            return String::new();
        }
        let mut h = String::from(
            "<h2>auto</h2><table class=\"candidates\"><thead><tr><th>type</th><th>outcome</th></tr></thead><tbody>",
        );
        for c in &self.candidates {
            let chosen = matches!(c.outcome, super::Outcome::Chosen);
            let _ = write!(
                h,
                "<tr{}><td>{}</td><td class=\"verdict\">{}</td></tr>",
                if chosen { " class=\"chosen\"" } else { "" },
                escape(&c.file_type.to_ascii_uppercase()),
                escape(&c.outcome.describe())
            );
        }
        h.push_str("</tbody></table>");
        h
    }

    fn table_html(&self) -> String {
        let mut h = String::from("<table class=\"types\"><thead><tr>");
        for c in super::summary::COLUMNS {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr></thead><tbody>");
        for t in &self.types {
            let class = Self::class_of(t).join(" ");
            let _ = write!(h, "<tr class=\"{class}\">");
            let cells = super::summary::row_cells(t);
            let last = cells.len() - 1;
            for (i, c) in cells.iter().enumerate() {
                let cls = if i == last { " class=\"verdict\"" } else { "" };
                let _ = write!(h, "<td{cls}>{}</td>", escape(c));
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table>");
        h
    }
}

#[cfg(test)]
pub(crate) fn sample_report() -> QualityReport {
    use super::measure::sample;
    let budget = Budget {
        max_kld: 0.05,
        max_ppl_increase: 5.0,
    };
    let types: Vec<MeasuredType> = [
        sample("q2_k", 3.2, 0.31, 12.0),
        sample("q4_k_m", 4.9, 0.03, 2.0),
        sample("q8_0", 8.5, 0.0012, 0.1),
    ]
    .into_iter()
    .map(|q| {
        let verdict = budget.judge(&q);
        MeasuredType {
            published: verdict.passes(),
            chosen: q.file_type == "q4_k_m",
            verdict,
            quality: q,
        }
    })
    .collect();
    QualityReport {
        model: "az-gpt <test>".into(),
        version: Some("3000".into()),
        text: "heldout.txt".into(),
        n_tokens: 2040,
        ppl_base: 35.0,
        budget,
        imatrix_text: Some("train.txt".into()),
        types,
        candidates: vec![],
        history: vec![
            VersionPoint {
                version: "1000".into(),
                ppl: 60.0,
                best: false,
            },
            VersionPoint {
                version: "2000".into(),
                ppl: 41.0,
                best: false,
            },
            VersionPoint {
                version: "3000".into(),
                ppl: 35.0,
                best: true,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_a_point_per_type_the_budget_and_the_chosen_one() {
        let r = sample_report();
        let html = r.render_html();
        assert!(html.contains("az-gpt &lt;test&gt;"));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("http://") || html.matches("http://").count() == 3,
            "only SVG namespaces"
        );
        assert_eq!(
            html.matches("<svg").count(),
            3,
            "two type charts and the history"
        );
        // 3 types in each of two charts, 3 versions.
        assert_eq!(html.matches("<g class=\"point").count(), 9);
        assert_eq!(
            html.matches("<g class=\"point published chosen\"").count(),
            2
        );
        assert_eq!(html.matches("class=\"budget\"").count(), 2);
        assert!(html.contains("<tr class=\"over\">"), "q2_k is over budget");
        assert!(html.contains("3000 (best)"));
        let json = serde_json::to_string(&r).expect("serialize");
        let back: QualityReport = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back, r);
    }

    #[test]
    fn a_drop_seen_once_has_no_history_chart() {
        let mut r = sample_report();
        r.history.truncate(1);
        assert_eq!(r.render_html().matches("<svg").count(), 2);
    }
}
