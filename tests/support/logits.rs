//! Converting a fixture and comparing llama.cpp's logits with PyTorch's
//! (`expected.json`: per sample `ids`, `last_logits`, `argmax`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use kvant::convert::{convert, ConvertReport, ConvertRequest, NoProgress, OutputSpec};
use kvant::quant::FileType;
use serde_json::Value;

use super::llama::Model;

/// Converts `src` to one `ft` file in `dir`.
pub fn convert_to(
    src: &Path,
    ft: FileType,
    dir: &Path,
    n_head: Option<usize>,
) -> (PathBuf, ConvertReport) {
    let out = dir.join(format!("out-{}.gguf", ft.name()));
    let req = ConvertRequest {
        source: src.to_owned(),
        outputs: vec![OutputSpec {
            file_type: ft,
            path: out.clone(),
        }],
        n_head,
        ..Default::default()
    };
    let report = convert(&req, &NoProgress, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("converting {}: {e}", src.display()));
    (out, report)
}

/// How llama.cpp's outputs compare with PyTorch's.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    /// Largest |logit − PyTorch logit| at the last position of any sample.
    pub max_abs_diff: f32,
    /// Fraction of positions (all samples) whose argmax equals PyTorch's.
    pub argmax_agreement: f64,
}

fn ids_of(v: &Value, key: &str) -> Vec<i64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} array"))
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

/// Runs every sample of `expected` through llama.cpp.
pub fn compare_logits(gguf: &Path, expected: &Value) -> Agreement {
    let model = Model::load(gguf, false);
    compare_logits_by(&|ids| model.eval_logits(ids), expected)
}

/// Runs every sample of `expected` through `eval` (llama.cpp's logits at
/// every position of the ids).
pub fn compare_logits_by(eval: &dyn Fn(&[i32]) -> Vec<Vec<f32>>, expected: &Value) -> Agreement {
    let samples = expected["logits"].as_array().expect("logits array");
    assert!(!samples.is_empty());
    let mut worst = 0f32;
    let (mut agree, mut total) = (0usize, 0usize);
    for sample in samples {
        let ids: Vec<i32> = ids_of(sample, "ids")
            .into_iter()
            .map(|i| i as i32)
            .collect();
        let want_last: Vec<f32> = sample["last_logits"]
            .as_array()
            .expect("last_logits")
            .iter()
            .map(|v| v.as_f64().expect("logit") as f32)
            .collect();
        let want_argmax = ids_of(sample, "argmax");
        let got = eval(&ids);
        assert_eq!(got.len(), ids.len());
        let last = got.last().expect("positions");
        assert_eq!(last.len(), want_last.len(), "vocabulary size");
        let diff = last
            .iter()
            .zip(&want_last)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff);
        for (row, want) in got.iter().zip(&want_argmax) {
            let arg = row
                .iter()
                .enumerate()
                .fold(
                    (0usize, f32::MIN),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0;
            agree += usize::from(arg as i64 == *want);
            total += 1;
        }
    }
    Agreement {
        max_abs_diff: worst,
        argmax_agreement: agree as f64 / total as f64,
    }
}

/// Asserts logits within `tolerance` and every argmax equal; returns the
/// largest difference.
pub fn check_logits(gguf: &Path, expected: &Value, tolerance: f32) -> f32 {
    assert_agreement(gguf, compare_logits(gguf, expected), tolerance)
}

/// Asserts `a` within `tolerance` and every argmax equal (`what` names
/// the file in the message); returns the largest difference.
pub fn assert_agreement(what: &Path, a: Agreement, tolerance: f32) -> f32 {
    let gguf = what;
    assert_eq!(
        a.argmax_agreement,
        1.0,
        "{}: argmax differs from PyTorch at some positions ({a:?})",
        gguf.display()
    );
    assert!(
        a.max_abs_diff <= tolerance,
        "{}: max |logit - pytorch| = {} > {tolerance}",
        gguf.display(),
        a.max_abs_diff
    );
    a.max_abs_diff
}
