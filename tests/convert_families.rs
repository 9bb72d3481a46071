//! Issue 5's proof for architectures: LLaMA, Mistral, Qwen2 and Qwen3
//! Hugging Face folders converted to F32 compute, in real llama.cpp, the
//! logits PyTorch computed (within 0.01, every argmax equal).

mod support;

use kvant::quant::FileType;

use support::fixtures;
use support::logits::{check_logits, convert_to};

fn family(name: &str, arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (gguf, report) = convert_to(&fixtures::path(name), FileType::F32, dir.path(), None);
    assert_eq!(report.arch, arch);
    let worst = check_logits(
        &gguf,
        &fixtures::json(&format!("{name}/expected.json")),
        0.01,
    );
    eprintln!("{name}: max abs logit diff {worst}");
}

#[test]
fn llama_gqa_untied() {
    family("hf-llama-az", "llama");
}

#[test]
fn llama3_single_kv_head() {
    family("hf-llama3-az", "llama");
}

#[test]
fn mistral_sentencepiece() {
    family("hf-mistral-sp-az", "llama");
}

#[test]
fn qwen2_biases_tied() {
    family("hf-qwen2-az", "qwen2");
}

#[test]
fn qwen3_qk_norms() {
    family("hf-qwen3-az", "qwen3");
}

#[test]
fn unknown_architecture_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m");
    std::fs::create_dir(&src).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures::path(&format!("hf-llama-az/{f}")), src.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(fixtures::path("hf-llama-az/config.json"))
        .unwrap()
        .replace("LlamaForCausalLM", "FalconForCausalLM");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let req = kvant::convert::ConvertRequest {
        source: src,
        outputs: vec![kvant::convert::OutputSpec {
            file_type: FileType::F32,
            path: dir.path().join("x.gguf"),
        }],
        ..Default::default()
    };
    let err = kvant::convert::convert(&req, &kvant::convert::NoProgress, &Default::default())
        .expect_err("unsupported");
    let msg = err.to_string();
    assert!(
        msg.contains("FalconForCausalLM") && msg.contains("Qwen2ForCausalLM"),
        "{msg}"
    );
    assert!(!dir.path().join("x.gguf").exists());
}

/// hf-llama3-az with Llama-3.1-style rope scaling in its config.
fn llama3_scaled(dir: &std::path::Path, factor: f64) -> std::path::PathBuf {
    let src = dir.join(format!("llama3-scaled-{factor}"));
    std::fs::create_dir(&src).unwrap();
    for e in std::fs::read_dir(fixtures::path("hf-llama3-az")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    let mut cfg = fixtures::json("hf-llama3-az/config.json");
    cfg["rope_parameters"] = serde_json::json!({
        "rope_theta": 500000.0,
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    });
    std::fs::write(src.join("config.json"), cfg.to_string()).unwrap();
    src
}

/// Hugging Face's `_compute_llama3_parameters` (in f64), as the ratio of
/// the unscaled to the scaled inverse frequency: what llama.cpp divides by.
fn hf_llama3_divisors(theta: f64, dim: usize, factor: f64, old_ctx: f64) -> Vec<f64> {
    let (low, high) = (1.0, 4.0);
    (0..dim / 2)
        .map(|i| {
            let inv = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / inv;
            let scaled = if wavelen < old_ctx / high {
                inv
            } else if wavelen > old_ctx / low {
                inv / factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (1.0 - smooth) * inv / factor + smooth * inv
            };
            inv / scaled
        })
        .collect()
}

#[test]
fn llama3_rope_scaling_becomes_rope_freqs() {
    let dir = tempfile::tempdir().unwrap();
    // factor 1 changes nothing in PyTorch: the logits must still match.
    let (gguf, _) = convert_to(
        &llama3_scaled(dir.path(), 1.0),
        FileType::F32,
        dir.path(),
        None,
    );
    let expected = fixtures::json("hf-llama3-az/expected.json");
    check_logits(&gguf, &expected, 0.01);
    let f = kvant::gguf::GgufFile::open(&gguf).unwrap();
    assert_eq!(f.tensors[0].info.name, "rope_freqs.weight");
    assert_eq!(f.tensors[0].info.ne, vec![16], "head_dim 32 / 2");
    drop(f);

    // factor 8: the divisors follow Hugging Face's definition, and the
    // model llama.cpp runs is really scaled.
    let (gguf, _) = convert_to(
        &llama3_scaled(dir.path(), 8.0),
        FileType::F32,
        dir.path(),
        None,
    );
    let f = kvant::gguf::GgufFile::open(&gguf).unwrap();
    let t = f.tensor("rope_freqs.weight").expect("rope_freqs.weight");
    let ours: Vec<f32> = f
        .tensor_data(t)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let hf = hf_llama3_divisors(500000.0, 32, 8.0, 64.0);
    for (i, (a, b)) in ours.iter().zip(&hf).enumerate() {
        assert!(
            ((*a as f64) - b).abs() <= 1e-5 * b,
            "factor {i}: kvant {a}, Hugging Face {b}"
        );
    }
    assert_eq!(ours[0], 1.0);
    assert_eq!(ours[15], 8.0);
    assert!(ours.iter().any(|&v| v > 1.0 && v < 8.0), "{ours:?}");
    drop(f);
    let agreement = support::logits::compare_logits(&gguf, &expected);
    assert!(
        agreement.max_abs_diff > 1e-3 && agreement.max_abs_diff.is_finite(),
        "scaled rope left the logits unchanged: {agreement:?}"
    );
}
