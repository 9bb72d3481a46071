//! kvant's type policy against the real llama.cpp: synthetic F32 GGUFs
//! (gpt2 and llama, tied and untied embeddings, GQA, a MoE-labelled model,
//! shuffled tensor order) are quantized with `llama_model_quantize` for
//! every file type, with and without an importance matrix, `--pure` and
//! each override kind, and every tensor's type in llama.cpp's output must
//! equal what `choose_types` decides.

#[allow(dead_code)]
#[path = "support/quantize.rs"]
mod quantize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvant::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter, Metadata, TensorInfo};
use kvant::quant::{
    choose_types, FileType, GgmlType, PolicyError, PolicyModel, PolicyTensor, TypeOverrides,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use quantize::{quantize_with, QuantizeOptions};

/// A synthetic model's shape.
#[derive(Debug, Clone)]
struct Spec {
    arch: &'static str,
    n_embd: u64,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    n_ff: u64,
    n_vocab: u64,
    n_ctx: u64,
    n_expert: u64,
    /// Write `output.weight` (untied embeddings).
    output: bool,
    /// Write the tensors in a shuffled order.
    shuffle: bool,
}

/// GPT-2's byte → printable-character map (`bytes_to_unicode`).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A byte-level BPE vocabulary of `n` tokens with merges.
fn vocab(n: u64) -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut merges = Vec::new();
    let chars: Vec<char> = ('!'..='~').collect();
    'outer: for &a in &chars {
        for &b in &chars {
            if tokens.len() as u64 >= n {
                break 'outer;
            }
            tokens.push(format!("{a}{b}"));
            merges.push(format!("{a} {b}"));
        }
    }
    tokens.truncate(n as usize);
    (tokens, merges)
}

fn tensor_table(s: &Spec) -> Vec<(String, Vec<u64>)> {
    let e = s.n_embd;
    let head_dim = e / s.n_head;
    let gqa = head_dim * s.n_head_kv;
    let mut t: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![e, s.n_vocab])];
    if s.arch == "gpt2" {
        t.push(("position_embd.weight".into(), vec![e, s.n_ctx]));
        t.push(("output_norm.bias".into(), vec![e]));
    }
    t.push(("output_norm.weight".into(), vec![e]));
    if s.output {
        t.push(("output.weight".into(), vec![e, s.n_vocab]));
    }
    for i in 0..s.n_layer {
        let b = |n: &str| format!("blk.{i}.{n}");
        t.push((b("attn_norm.weight"), vec![e]));
        t.push((b("ffn_norm.weight"), vec![e]));
        if s.arch == "gpt2" {
            t.push((b("attn_norm.bias"), vec![e]));
            t.push((b("ffn_norm.bias"), vec![e]));
            t.push((b("attn_qkv.weight"), vec![e, e + 2 * gqa]));
            t.push((b("attn_qkv.bias"), vec![e + 2 * gqa]));
            t.push((b("attn_output.weight"), vec![e, e]));
            t.push((b("attn_output.bias"), vec![e]));
            t.push((b("ffn_up.weight"), vec![e, s.n_ff]));
            t.push((b("ffn_up.bias"), vec![s.n_ff]));
            t.push((b("ffn_down.weight"), vec![s.n_ff, e]));
            t.push((b("ffn_down.bias"), vec![e]));
        } else {
            t.push((b("attn_q.weight"), vec![e, e]));
            t.push((b("attn_k.weight"), vec![e, gqa]));
            t.push((b("attn_v.weight"), vec![e, gqa]));
            t.push((b("attn_output.weight"), vec![e, e]));
            t.push((b("ffn_gate.weight"), vec![e, s.n_ff]));
            t.push((b("ffn_up.weight"), vec![e, s.n_ff]));
            t.push((b("ffn_down.weight"), vec![s.n_ff, e]));
        }
    }
    t
}

/// Writes `s` as an F32 GGUF with random weights; returns the policy view
/// of the file (tensors in file order).
fn build(s: &Spec, path: &Path, seed: u64) -> PolicyModel {
    let a = s.arch;
    let mut md = Metadata::new();
    let u32v = |v: u64| GgufValue::U32(v as u32);
    md.set("general.architecture", a);
    md.set("general.name", "policy-test");
    md.set("general.file_type", u32v(0));
    md.set(format!("{a}.context_length"), u32v(s.n_ctx));
    md.set(format!("{a}.embedding_length"), u32v(s.n_embd));
    md.set(format!("{a}.block_count"), u32v(s.n_layer));
    md.set(format!("{a}.feed_forward_length"), u32v(s.n_ff));
    md.set(format!("{a}.attention.head_count"), u32v(s.n_head));
    md.set(format!("{a}.attention.head_count_kv"), u32v(s.n_head_kv));
    if a == "gpt2" {
        md.set(
            format!("{a}.attention.layer_norm_epsilon"),
            GgufValue::F32(1e-5),
        );
    } else {
        md.set(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-5),
        );
        md.set(
            format!("{a}.rope.dimension_count"),
            u32v(s.n_embd / s.n_head),
        );
    }
    if s.n_expert > 0 {
        md.set(format!("{a}.expert_count"), u32v(s.n_expert));
        md.set(format!("{a}.expert_used_count"), u32v(2));
    }
    let (tokens, merges) = vocab(s.n_vocab);
    md.set("tokenizer.ggml.model", "gpt2");
    md.set("tokenizer.ggml.pre", "gpt-2");
    md.set(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(tokens)),
    );
    md.set(
        "tokenizer.ggml.merges",
        GgufValue::Array(GgufArray::String(merges)),
    );

    let mut rng = StdRng::seed_from_u64(seed);
    let mut table = tensor_table(s);
    if s.shuffle {
        table.shuffle(&mut rng);
    }
    let infos: Vec<TensorInfo> = table
        .iter()
        .map(|(n, ne)| TensorInfo::new(n.clone(), ne.clone(), GgmlType::F32))
        .collect();
    let mut w = GgufWriter::create(path, &md, infos).unwrap();
    for (name, ne) in &table {
        let n: u64 = ne.iter().product();
        let data: Vec<u8> = (0..n)
            .flat_map(|_| rng.random_range(-0.05f32..0.05).to_le_bytes())
            .collect();
        w.write_tensor(name, &data).unwrap();
    }
    w.finish().unwrap();
    PolicyModel {
        arch: a.to_string(),
        n_layer: s.n_layer as u32,
        n_head: s.n_head as u32,
        n_head_kv: s.n_head_kv as u32,
        n_expert: s.n_expert as u32,
        tensors: table
            .into_iter()
            .map(|(name, ne)| PolicyTensor { name, ne })
            .collect(),
    }
}

/// Like fixtures `hf-gpt2-az`: n_embd 128 (K-quants fall back), tied.
fn gpt2_small() -> Spec {
    Spec {
        arch: "gpt2",
        n_embd: 128,
        n_layer: 4,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 512,
        n_vocab: 2048,
        n_ctx: 128,
        n_expert: 0,
        output: false,
        shuffle: false,
    }
}

/// GPT-2 small's width: every K-quant fits; untied output.
fn gpt2_wide() -> Spec {
    Spec {
        arch: "gpt2",
        n_embd: 768,
        n_layer: 3,
        n_head: 12,
        n_head_kv: 12,
        n_ff: 3072,
        n_vocab: 1000,
        n_ctx: 64,
        n_expert: 0,
        output: true,
        shuffle: false,
    }
}

/// LLaMA with GQA (n_gqa 2), ffn_down rows of 640 (fallbacks).
fn llama_gqa() -> Spec {
    Spec {
        arch: "llama",
        n_embd: 256,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 640,
        n_vocab: 512,
        n_ctx: 64,
        n_expert: 0,
        output: true,
        shuffle: false,
    }
}

/// 12 layers written in shuffled order: the "more bits" counters must
/// follow llama.cpp's sorted order (blk.2 before blk.10), and n/8 > 0 so
/// the first-layers rules (imatrix Q4_0/Q5_0) apply.
fn gpt2_deep_shuffled() -> Spec {
    Spec {
        arch: "gpt2",
        n_embd: 256,
        n_layer: 12,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 512,
        n_vocab: 300,
        n_ctx: 32,
        n_expert: 0,
        output: false,
        shuffle: true,
    }
}

/// LLaMA labelled as 8 experts (n_gqa 4): the MoE rules (attn_v/attn_k
/// → Q8_0, layers read from names) and n_gqa ≥ 4 apply. llama.cpp's
/// quantizer reads only hyper-parameters, so dense tensors suffice.
fn llama_moe_label() -> Spec {
    Spec {
        arch: "llama",
        n_embd: 256,
        n_layer: 3,
        n_head: 8,
        n_head_kv: 2,
        n_ff: 256,
        n_vocab: 300,
        n_ctx: 64,
        n_expert: 8,
        output: true,
        shuffle: true,
    }
}

fn types_in(path: &Path) -> BTreeMap<String, GgmlType> {
    let f = GgufFile::open(path).unwrap();
    f.tensors
        .iter()
        .map(|t| (t.info.name.clone(), t.info.ty))
        .collect()
}

fn overrides_of(o: &QuantizeOptions) -> TypeOverrides {
    TypeOverrides {
        tensor_types: o
            .tensor_types
            .iter()
            .map(|(p, t)| (regex::Regex::new(p).unwrap(), *t))
            .collect(),
        output_type: o.output_type,
        token_embedding_type: o.token_embedding_type,
        pure: o.pure,
        leave_output_tensor: o.leave_output_tensor,
    }
}

/// Quantizes `input` with llama.cpp and asserts every tensor's type and
/// `general.file_type` equal kvant's decision. Returns llama.cpp's types.
fn check(
    input: &Path,
    model: &PolicyModel,
    ft: FileType,
    opts: &QuantizeOptions,
    dir: &Path,
) -> BTreeMap<String, GgmlType> {
    let out: PathBuf = dir.join(format!("out-{}.gguf", ft.name()));
    quantize_with(input, &out, ft, opts)
        .unwrap_or_else(|rc| panic!("llama_model_quantize {ft} failed: {rc}"));
    let theirs = types_in(&out);
    let ours = choose_types(ft, model, &overrides_of(opts), !opts.imatrix.is_empty()).unwrap();
    let ours: BTreeMap<String, GgmlType> = model
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .zip(ours)
        .collect();
    let diffs: Vec<String> = theirs
        .iter()
        .filter(|(n, t)| ours.get(*n) != Some(*t))
        .map(|(n, t)| format!("{n}: llama.cpp {t}, kvant {:?}", ours.get(n)))
        .collect();
    assert!(diffs.is_empty(), "{ft} {opts:?}:\n{}", diffs.join("\n"));
    assert_eq!(theirs.len(), ours.len(), "{ft}: tensor count");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.metadata.get("general.file_type"),
        Some(&GgufValue::U32(ft.llama_ftype())),
        "{ft}: general.file_type"
    );
    std::fs::remove_file(&out).unwrap();
    theirs
}

fn counts(types: &BTreeMap<String, GgmlType>) -> BTreeMap<GgmlType, usize> {
    let mut c = BTreeMap::new();
    for t in types.values() {
        *c.entry(*t).or_default() += 1;
    }
    c
}

fn every_file_type(spec: Spec, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in-f32.gguf");
    let model = build(&spec, &input, seed);
    for ft in FileType::ALL {
        check(&input, &model, ft, &QuantizeOptions::default(), dir.path());
    }
}

#[test]
fn gpt2_narrow_tied_every_file_type_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in-f32.gguf");
    let model = build(&gpt2_small(), &input, 1);
    for ft in FileType::ALL {
        let theirs = check(&input, &model, ft, &QuantizeOptions::default(), dir.path());
        // The fixtures README's table (llama.cpp on hf-gpt2-az, same shapes).
        use GgmlType as G;
        let expected: &[(GgmlType, usize)] = match ft {
            FileType::Q8_0 => &[(G::F32, 35), (G::Q8_0, 17)],
            FileType::Q4_K_M => &[
                (G::F32, 35),
                (G::Q8_0, 3),
                (G::Q5_0, 10),
                (G::Q4K, 2),
                (G::Q6K, 2),
            ],
            FileType::Q6_K => &[(G::F32, 35), (G::Q8_0, 13), (G::Q6K, 4)],
            FileType::Q2_K => &[(G::F32, 35), (G::Q8_0, 1), (G::Q4_0, 12), (G::Q3K, 4)],
            _ => continue,
        };
        assert_eq!(counts(&theirs), expected.iter().copied().collect(), "{ft}");
    }
}

#[test]
fn gpt2_wide_untied_every_file_type_matches_llama_cpp() {
    every_file_type(gpt2_wide(), 2);
}

#[test]
fn llama_gqa_every_file_type_matches_llama_cpp() {
    every_file_type(llama_gqa(), 3);
}

#[test]
fn deep_shuffled_gpt2_every_file_type_matches_llama_cpp() {
    every_file_type(gpt2_deep_shuffled(), 4);
}

#[test]
fn moe_labelled_llama_every_file_type_matches_llama_cpp() {
    every_file_type(llama_moe_label(), 5);
}

/// Positive random importance weights for every 2-D weight of `model`.
fn random_imatrix(model: &PolicyModel, seed: u64) -> Vec<(String, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    model
        .tensors
        .iter()
        .filter(|t| t.ne.len() == 2 && t.name.ends_with(".weight"))
        .map(|t| {
            let v = (0..t.ne[0])
                .map(|_| rng.random_range(0.01f32..2.0))
                .collect();
            (t.name.clone(), v)
        })
        .collect()
}

#[test]
fn with_an_imatrix_the_rules_still_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (spec, seed) in [(gpt2_deep_shuffled(), 6), (gpt2_small(), 7)] {
        let input = dir.path().join("in-f32.gguf");
        let model = build(&spec, &input, seed);
        let opts = QuantizeOptions {
            imatrix: random_imatrix(&model, seed),
            ..Default::default()
        };
        for ft in FileType::ALL {
            let with = check(&input, &model, ft, &opts, dir.path());
            if spec.n_layer >= 8 && matches!(ft, FileType::Q4_0 | FileType::Q5_0) {
                // the imatrix really changed llama.cpp's choice here
                let without = choose_types(ft, &model, &TypeOverrides::default(), false).unwrap();
                let without: BTreeMap<_, _> = model
                    .tensors
                    .iter()
                    .map(|t| t.name.clone())
                    .zip(without)
                    .collect();
                assert_ne!(with, without, "{ft}: imatrix made no difference");
            }
        }
    }
}

#[test]
fn pure_and_overrides_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Spec, QuantizeOptions)> = vec![
        (
            gpt2_small(),
            QuantizeOptions {
                pure: true,
                ..Default::default()
            },
        ),
        (
            gpt2_wide(),
            QuantizeOptions {
                pure: true,
                ..Default::default()
            },
        ),
        (
            gpt2_wide(),
            QuantizeOptions {
                leave_output_tensor: true,
                ..Default::default()
            },
        ),
        (
            gpt2_wide(),
            QuantizeOptions {
                output_type: Some(GgmlType::Q5K),
                token_embedding_type: Some(GgmlType::Q4_0),
                ..Default::default()
            },
        ),
        (
            // tied: the output type also applies to token_embd
            gpt2_small(),
            QuantizeOptions {
                output_type: Some(GgmlType::Q4_1),
                ..Default::default()
            },
        ),
        (
            gpt2_deep_shuffled(),
            QuantizeOptions {
                tensor_types: vec![
                    (r"blk\.1[0-9]\.ffn_down".into(), GgmlType::Q8_0),
                    ("attn_qkv".into(), GgmlType::Q5K),
                    ("ffn".into(), GgmlType::Q2K),
                ],
                ..Default::default()
            },
        ),
        (
            gpt2_small(),
            QuantizeOptions {
                tensor_types: vec![("attn".into(), GgmlType::Q6K)],
                token_embedding_type: Some(GgmlType::F16),
                pure: true,
                ..Default::default()
            },
        ),
        (
            llama_gqa(),
            QuantizeOptions {
                tensor_types: vec![
                    ("attn_v".into(), GgmlType::Q4K),
                    ("token_embd".into(), GgmlType::Q8_0),
                ],
                leave_output_tensor: true,
                ..Default::default()
            },
        ),
    ];
    for (i, (spec, opts)) in cases.into_iter().enumerate() {
        let input = dir.path().join(format!("in-{i}.gguf"));
        let model = build(&spec, &input, 10 + i as u64);
        for ft in FileType::ALL {
            check(&input, &model, ft, &opts, dir.path());
        }
        std::fs::remove_file(&input).unwrap();
    }
}

#[test]
fn an_override_that_cannot_hold_the_rows_is_refused() {
    // llama.cpp would pick Q4_K for output.weight here and then abort while
    // quantizing 128-wide rows; kvant says so up front.
    let model = PolicyModel {
        arch: "gpt2".into(),
        n_layer: 1,
        n_head: 1,
        n_head_kv: 1,
        n_expert: 0,
        tensors: vec![PolicyTensor {
            name: "output.weight".into(),
            ne: vec![128, 64],
        }],
    };
    let o = TypeOverrides {
        output_type: Some(GgmlType::Q4K),
        ..Default::default()
    };
    let err = choose_types(FileType::Q8_0, &model, &o, false).unwrap_err();
    assert!(
        matches!(err, PolicyError::IncompatibleShape { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("output.weight"), "{err}");
}

#[test]
fn moe_tensor_without_a_layer_number_is_an_error() {
    let model = PolicyModel {
        arch: "llama".into(),
        n_layer: 2,
        n_head: 4,
        n_head_kv: 4,
        n_expert: 8,
        tensors: vec![
            PolicyTensor {
                name: "blk.0.ffn_down.weight".into(),
                ne: vec![256, 256],
            },
            PolicyTensor {
                name: "blk.7.ffn_down.weight".into(),
                ne: vec![256, 256],
            },
        ],
    };
    let err = choose_types(FileType::Q4_K_M, &model, &TypeOverrides::default(), false).unwrap_err();
    assert!(matches!(err, PolicyError::BadLayer { .. }), "{err}");
}
