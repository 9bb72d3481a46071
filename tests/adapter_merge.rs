//! Issue 12, merged mode: each PEFT adapter fixture merged into its base
//! by kvant computes, in real llama.cpp, the logits the PEFT model
//! computed (expected.json: the base with the adapter applied, unmerged)
//! within 0.01, every argmax equal; its Q8_0 and Q4_K_M files behave
//! exactly like llama.cpp's own quantization of the merged F32 file and
//! stay within the usual quantization deviations (at most three times what the
//! same type does to the base itself; 90 % of argmaxes or more).

mod support;

use kvant::gguf::GgufFile;
use kvant::quant::FileType;

use support::fixtures;
use support::logits::{check_logits, compare_logits, convert_to};

/// Merges fixture `name` (whose base lies beside it) and checks it.
fn merged(name: &str, arch: &str, base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures::path(name);
    let expected = fixtures::json(&format!("{name}/expected.json"));
    let (f32_gguf, report) = convert_to(&src, FileType::F32, dir.path(), None);
    assert_eq!(report.arch, arch);
    assert_eq!(report.model_name, name, "named after the adapter drop");
    assert_eq!(report.version, None, "an adapter's version is its content");
    let worst = check_logits(&f32_gguf, &expected, 0.01);
    eprintln!("{name}: F32 max abs logit diff {worst}");

    // The base is recorded, and the adapter's hash.
    let f = GgufFile::open(&f32_gguf).unwrap();
    let s = |k: &str| {
        f.metadata
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    assert_eq!(s("general.base_model.0.name").as_deref(), Some(base));
    assert_eq!(
        s("general.base_model.0.organization").as_deref(),
        Some("kvant-fixtures")
    );
    assert_eq!(s("general.name").as_deref(), Some(name));
    let sha = s("kvant.adapter.sha256").expect("adapter hash");
    assert_eq!(sha.len(), 64);
    drop(f);

    // The usual deviation: what the same quantization does to the base
    // model itself, against its own PyTorch logits.
    let base_src = fixtures::path(base);
    // hf-gpt2-az is nanogpt-az exported; its logits are kept there.
    let base_logits = match base {
        "hf-gpt2-az" => "nanogpt-az",
        other => other,
    };
    let base_expected = fixtures::json(&format!("{base_logits}/expected.json"));
    for ft in [FileType::Q8_0, FileType::Q4_K_M] {
        let (ours, _) = convert_to(&src, ft, dir.path(), None);
        let theirs = dir.path().join(format!("llama-{}.gguf", ft.name()));
        support::quantize::llama_model_quantize(&f32_gguf, &theirs, ft, None);
        let a = compare_logits(&ours, &expected);
        let b = compare_logits(&theirs, &expected);
        let base_dir = tempfile::tempdir().unwrap();
        let (base_q, _) = convert_to(&base_src, ft, base_dir.path(), None);
        let usual = compare_logits(&base_q, &base_expected);
        eprintln!("{name} {ft}: kvant {a:?}, llama.cpp's quantizer on the merged F32 {b:?}, the base quantized {usual:?}");
        assert_eq!(
            a.max_abs_diff, b.max_abs_diff,
            "{ft}: differs from llama.cpp's own quantization"
        );
        assert_eq!(a.argmax_agreement, b.argmax_agreement, "{ft}");
        assert!(
            a.max_abs_diff <= 3.0 * usual.max_abs_diff.max(0.05) && a.max_abs_diff <= 0.3,
            "{ft}: {a:?} against the base's {usual:?}"
        );
        // A fine-tune's top logits can lie closer together than the
        // base's, so agreement is bounded absolutely.
        assert!(a.argmax_agreement >= 0.9, "{ft}: {a:?}");
    }
}

#[test]
fn llama_lora_merges_into_the_base() {
    merged("lora-llama-az", "llama", "hf-llama-az");
}

#[test]
fn qwen2_rslora_with_rank_and_alpha_patterns_merges() {
    merged("lora-qwen2-rslora", "qwen2", "hf-qwen2-az");
}

#[test]
fn gpt2_conv1d_lora_merges() {
    merged("lora-gpt2-az", "gpt2", "hf-gpt2-az");
}

#[test]
fn dora_merges_with_its_magnitudes() {
    merged("dora-llama-az", "llama", "hf-llama-az");
}

#[test]
fn embedding_lora_and_saved_head_merge() {
    merged("lora-llama-head", "llama", "hf-llama-az");
}
