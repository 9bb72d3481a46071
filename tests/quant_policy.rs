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

use kvant::gguf::{GgufFile, GgufValue};
use kvant::quant::{
    choose_types, FileType, GgmlType, PolicyError, PolicyModel, PolicyTensor, TypeOverrides,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use quantize::{build, quantize_with, QuantizeOptions, Spec};

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

/// Small but wide enough for every K-quant, untied (for the override runs).
fn gpt2_256_untied() -> Spec {
    Spec {
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 512,
        n_vocab: 300,
        n_ctx: 32,
        ..Spec::gpt2_wide()
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
    every_file_type(Spec::gpt2_wide(), 2);
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
            gpt2_256_untied(),
            QuantizeOptions {
                pure: true,
                ..Default::default()
            },
        ),
        (
            gpt2_256_untied(),
            QuantizeOptions {
                leave_output_tensor: true,
                ..Default::default()
            },
        ),
        (
            gpt2_256_untied(),
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

#[allow(dead_code)]
#[path = "support/fixtures.rs"]
mod fixtures;

/// The fixtures README's table of tensor-type counts llama.cpp's quantizer
/// gives the `hf-gpt2-az` F32 GGUF (`| Q4_K_M | F32 35, Q8_0 3, … |`).
fn readme_type_counts() -> Vec<(FileType, BTreeMap<GgmlType, usize>)> {
    let text = std::fs::read_to_string(fixtures::path("README.md")).unwrap();
    let start = text
        .find("on the `hf-gpt2-az` F32 GGUF")
        .expect("README has the hf-gpt2-az quantization table");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text[start..].lines().skip(1) {
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(ft) = cells[1].parse::<FileType>() else {
            continue;
        };
        let counts = cells[2]
            .split(',')
            .map(|kv| {
                let (ty, n) = kv.trim().split_once(' ').unwrap();
                (ty.parse::<GgmlType>().unwrap(), n.parse::<usize>().unwrap())
            })
            .collect();
        rows.push((ft, counts));
    }
    assert!(rows.len() >= 4, "README table not parsed: {rows:?}");
    rows
}

#[test]
fn kvant_f32_of_the_gpt2_fixture_gives_the_readme_type_counts() {
    use std::sync::atomic::AtomicBool;

    use kvant::convert::{convert, ConvertRequest, NoProgress, OutputSpec};

    let dir = tempfile::tempdir().unwrap();
    let table = readme_type_counts();
    let f32_path = dir.path().join("f32.gguf");
    let mut outputs = vec![OutputSpec {
        file_type: FileType::F32,
        path: f32_path.clone(),
    }];
    for (ft, _) in &table {
        outputs.push(OutputSpec {
            file_type: *ft,
            path: dir.path().join(format!("kvant-{}.gguf", ft.name())),
        });
    }
    let req = ConvertRequest {
        source: fixtures::path("hf-gpt2-az"),
        outputs,
        ..Default::default()
    };
    convert(&req, &NoProgress, &AtomicBool::new(false)).unwrap();

    // The policy's input: the F32 file's tensors and hyper-parameters.
    let f = GgufFile::open(&f32_path).unwrap();
    let u = |k: &str| {
        f.metadata
            .get(&format!("gpt2.{k}"))
            .and_then(GgufValue::as_u64)
            .unwrap() as u32
    };
    let model = PolicyModel {
        arch: "gpt2".into(),
        n_layer: u("block_count"),
        n_head: u("attention.head_count"),
        n_head_kv: u("attention.head_count"),
        n_expert: 0,
        tensors: f
            .tensors
            .iter()
            .map(|t| PolicyTensor {
                name: t.info.name.clone(),
                ne: t.info.ne.clone(),
            })
            .collect(),
    };
    for (ft, want) in &table {
        let ours = choose_types(*ft, &model, &TypeOverrides::default(), false).unwrap();
        let ours_map: BTreeMap<String, GgmlType> = model
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .zip(ours)
            .collect();
        assert_eq!(&counts(&ours_map), want, "{ft}: choose_types vs README");
        // llama.cpp on the same file agrees tensor by tensor
        let theirs = check(
            &f32_path,
            &model,
            *ft,
            &QuantizeOptions::default(),
            dir.path(),
        );
        assert_eq!(&counts(&theirs), want, "{ft}: llama.cpp vs README");
        // and kvant's own file of that mix carries these types
        let kvant_out = dir.path().join(format!("kvant-{}.gguf", ft.name()));
        assert_eq!(types_in(&kvant_out), ours_map, "{ft}: kvant's file");
    }
}

#[test]
fn llama_70b_label_matches_llama_cpp() {
    // 80 layers with GQA make llama.cpp call a llama model "70B", which
    // bumps attn_v; the tensors are kept narrow (n_ff 32) to stay small.
    let spec = Spec {
        arch: "llama",
        n_embd: 256,
        n_layer: 80,
        n_head: 8,
        n_head_kv: 1,
        n_ff: 32,
        n_vocab: 300,
        n_ctx: 64,
        n_expert: 0,
        output: true,
        shuffle: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in-f32.gguf");
    let model = build(&spec, &input, 20);
    for ft in [FileType::Q2_K, FileType::Q3_K_S, FileType::Q4_K_M] {
        let theirs = check(&input, &model, ft, &QuantizeOptions::default(), dir.path());
        if ft == FileType::Q3_K_S {
            // without the 70B rule this would be the default Q3_K
            assert_eq!(theirs["blk.40.attn_v.weight"], GgmlType::Q5K);
        }
    }
}
