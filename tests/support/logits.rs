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

/// Runs every sample of `expected` through llama.cpp and returns the
/// largest absolute difference of the last position's logits; asserts
/// the argmax at every position.
pub fn check_logits(gguf: &Path, expected: &Value, tolerance: f32) -> f32 {
    let model = Model::load(gguf, false);
    let samples = expected["logits"].as_array().expect("logits array");
    assert!(!samples.is_empty());
    let mut worst = 0f32;
    for (s, sample) in samples.iter().enumerate() {
        let ids: Vec<i32> = sample["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().expect("id") as i32)
            .collect();
        let want_last: Vec<f32> = sample["last_logits"]
            .as_array()
            .expect("last_logits")
            .iter()
            .map(|v| v.as_f64().expect("logit") as f32)
            .collect();
        let want_argmax: Vec<usize> = sample["argmax"]
            .as_array()
            .expect("argmax")
            .iter()
            .map(|v| v.as_u64().expect("argmax") as usize)
            .collect();
        let got = model.eval_logits(&ids);
        assert_eq!(got.len(), ids.len());
        let last = got.last().expect("positions");
        assert_eq!(last.len(), want_last.len(), "vocabulary size");
        let diff = last
            .iter()
            .zip(&want_last)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff);
        let argmax: Vec<usize> = got
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                    )
                    .0
            })
            .collect();
        assert_eq!(
            argmax,
            want_argmax,
            "{}: argmax differs in sample {s}",
            gguf.display()
        );
    }
    assert!(
        worst <= tolerance,
        "{}: max |logit - pytorch| = {worst} > {tolerance}",
        gguf.display()
    );
    worst
}


