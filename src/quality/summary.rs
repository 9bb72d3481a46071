//! The same numbers as text: the table `kvant report` prints, and the
//! one-line comment the Modelfile carries.

use super::page::{MeasuredType, QualityReport};
use super::{TypeQuality, Verdict};

/// Column headings of the table (terminal and page).
pub const COLUMNS: [&str; 10] = [
    "type", "size", "bits/w", "PPL", "ΔPPL", "mean KLD", "KLD p99", "same top", "RMS Δp", "verdict",
];

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The table cells of one type, as [`COLUMNS`] names them.
pub fn row_cells(t: &MeasuredType) -> Vec<String> {
    let q = &t.quality;
    let verdict = match (&t.verdict, t.chosen, t.published) {
        (Verdict::Pass, true, _) => "chosen, published".to_string(),
        (Verdict::Pass, false, true) => "published".to_string(),
        (Verdict::Pass, false, false) => "within budget".to_string(),
        (v, _, _) => v.reason().unwrap_or_default(),
    };
    vec![
        q.file_type.to_ascii_uppercase(),
        mib(q.size),
        format!("{:.2}", q.bits_per_weight),
        format!("{:.4}", q.ppl),
        format!("{:+.2} %", q.ppl_increase_pct()),
        format!("{:.6}", q.kld_mean),
        format!("{:.6}", q.kld_p99),
        format!("{:.2} %", q.same_top_p * 100.0),
        format!("{:.3} %", q.rms_dp * 100.0),
        verdict,
    ]
}

/// The table as aligned text, with a heading line naming the text.
pub fn render_table(r: &QualityReport) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(COLUMNS.iter().map(|s| s.to_string()).collect())
        .chain(r.types.iter().map(row_cells))
        .collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "{}: measured on {} ({} tokens), full-precision PPL {:.4}, budget KLD {} / PPL +{} %\n",
        r.model, r.text, r.n_tokens, r.ppl_base, r.budget.max_kld, r.budget.max_ppl_increase
    );
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                let pad = w - cell.chars().count();
                if i == 0 || i == COLUMNS.len() - 1 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `auto`'s candidates, one line each ("" without `auto`).
pub fn render_candidates(r: &QualityReport) -> String {
    if r.candidates.is_empty() {
        return String::new();
    }
    let mut out = String::from("auto's candidates, smallest first:\n");
    for c in &r.candidates {
        out.push_str(&format!(
            "  {:<8} {}\n",
            c.file_type.to_ascii_uppercase(),
            c.outcome.describe()
        ));
    }
    out
}

/// The Modelfile's comment line for the published type:
/// `# kvant: Q4_K_M, KLD 0.012, PPL +1.3 % on heldout.txt, 2 040 tokens`.
pub fn modelfile_comment(q: &TypeQuality, text: &str) -> String {
    format!(
        "# kvant: {}, KLD {}, PPL {:+.1} % on {}, {} tokens",
        q.file_type.to_ascii_uppercase(),
        significant(q.kld_mean),
        q.ppl_increase_pct(),
        text,
        thousands(q.n_tokens)
    )
}

/// Two significant digits (0.012, 0.00031).
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (1 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// 2040 → "2 040" (a thin, unambiguous thousands separator).
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::measure::sample;
    use super::super::page::sample_report;
    use super::*;

    #[test]
    fn the_modelfile_line_reads_as_documented() {
        let mut q = sample("q4_k_m", 4.9, 0.0123, 1.3);
        q.n_tokens = 2040;
        assert_eq!(
            modelfile_comment(&q, "heldout.txt"),
            "# kvant: Q4_K_M, KLD 0.012, PPL +1.3 % on heldout.txt, 2 040 tokens"
        );
        assert_eq!(significant(0.000314), "0.00031");
        assert_eq!(thousands(1_234_567), "1 234 567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn the_table_aligns_and_says_why() {
        let t = render_table(&sample_report());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(
            lines[2].starts_with("Q2_K") && lines[2].contains("mean KLD 0.3100 > budget 0.05"),
            "{t}"
        );
        assert!(lines[3].contains("chosen, published"), "{t}");
        let col = |l: &str| l.find(" %").expect("a percentage");
        assert_eq!(col(lines[3]), col(lines[4]), "right-aligned columns:\n{t}");
    }
}
