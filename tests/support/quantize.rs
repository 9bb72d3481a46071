//! A safe wrapper over the real llama.cpp's `llama_model_quantize` (the
//! judge kvant's quantizer is compared against), with llama-quantize's
//! command-line options as plain Rust values.
//!
//! An importance matrix is loaded with kvant's [`Imatrix`] loader (the
//! quantize tool's own loader is not part of the linked library) and passed
//! as the library's `llama_model_imatrix_data` list.
//!
//! It also builds the synthetic F32 GGUFs (gpt2 or llama metadata, a small
//! byte-level vocabulary, random weights) the policy and imatrix tests feed it.

use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::sync::Once;

use kvant::gguf::{GgufArray, GgufValue, GgufWriter, Metadata, TensorInfo};
use kvant::quant::{FileType, GgmlType, Imatrix, PolicyModel, PolicyTensor};
use llama_cpp_sys_2::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// llama-quantize's options.
#[derive(Debug, Clone, Default)]
pub struct QuantizeOptions {
    /// `--imatrix`: entries (name, values) handed to llama.cpp.
    pub imatrix: Vec<(String, Vec<f32>)>,
    /// `--tensor-type PATTERN=TYPE`, in order.
    pub tensor_types: Vec<(String, GgmlType)>,
    /// `--output-tensor-type`.
    pub output_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--pure`.
    pub pure: bool,
    /// `--leave-output-tensor`.
    pub leave_output_tensor: bool,
}

unsafe extern "C" fn quiet(_level: ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| unsafe {
        if std::env::var_os("KVANT_LLAMA_LOG").is_none() {
            llama_log_set(Some(quiet), std::ptr::null_mut());
        }
        llama_backend_init();
    });
}

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().expect("utf-8 path")).expect("no NUL in path")
}

/// Runs `llama_model_quantize(input → output)` with 2 threads; `Err` with
/// llama.cpp's return code when it refuses.
pub fn quantize_with(
    input: &Path,
    output: &Path,
    ftype: FileType,
    opts: &QuantizeOptions,
) -> Result<(), u32> {
    init();
    let inp = cpath(input);
    let out = cpath(output);

    let im_names: Vec<CString> = opts
        .imatrix
        .iter()
        .map(|(n, _)| CString::new(n.as_str()).unwrap())
        .collect();
    let mut im: Vec<llama_model_imatrix_data> = opts
        .imatrix
        .iter()
        .zip(&im_names)
        .map(|((_, v), n)| llama_model_imatrix_data {
            name: n.as_ptr(),
            data: v.as_ptr(),
            size: v.len(),
        })
        .collect();
    im.push(llama_model_imatrix_data {
        name: std::ptr::null(),
        data: std::ptr::null(),
        size: 0,
    });

    let tt_patterns: Vec<CString> = opts
        .tensor_types
        .iter()
        .map(|(p, _)| CString::new(p.as_str()).unwrap())
        .collect();
    let mut tt: Vec<llama_model_tensor_override> = opts
        .tensor_types
        .iter()
        .zip(&tt_patterns)
        .map(|((_, ty), p)| llama_model_tensor_override {
            pattern: p.as_ptr(),
            type_: ty.id() as ggml_type,
        })
        .collect();
    tt.push(llama_model_tensor_override {
        pattern: std::ptr::null(),
        type_: GGML_TYPE_COUNT,
    });

    // SAFETY: plain C constructor returning a value.
    let mut params = unsafe { llama_model_quantize_default_params() };
    params.nthread = 2;
    params.ftype = ftype.llama_ftype() as llama_ftype;
    params.pure_ = opts.pure;
    params.quantize_output_tensor = !opts.leave_output_tensor;
    if let Some(t) = opts.output_type {
        params.output_tensor_type = t.id() as ggml_type;
    }
    if let Some(t) = opts.token_embedding_type {
        params.token_embedding_type = t.id() as ggml_type;
    }
    if !opts.imatrix.is_empty() {
        params.imatrix = im.as_ptr();
    }
    if !opts.tensor_types.is_empty() {
        params.tt_overrides = tt.as_ptr();
    }
    // SAFETY: every pointer in `params` points into `inp`, `out`, `im`,
    // `im_names`, `opts.imatrix`, `tt` and `tt_patterns`, all alive until
    // the call returns; the lists end with the null entries llama.cpp
    // expects.
    let rc = unsafe { llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc == 0 {
        Ok(())
    } else {
        Err(rc)
    }
}

/// Entries of an importance-matrix file, as llama-quantize's `--imatrix`
/// hands them to the library.
pub fn imatrix_entries(path: &Path) -> Vec<(String, Vec<f32>)> {
    let m = Imatrix::load(path).unwrap_or_else(|e| panic!("loading imatrix: {e}"));
    let mut names: Vec<String> = m.names().map(str::to_string).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = m.values(&n).unwrap().to_vec();
            (n, v)
        })
        .collect()
}

/// `llama-quantize [--imatrix FILE] input output TYPE` with 2 threads;
/// panics (failing the test) when llama.cpp refuses.
pub fn llama_model_quantize(input: &Path, output: &Path, ftype: FileType, imatrix: Option<&Path>) {
    let opts = QuantizeOptions {
        imatrix: imatrix.map(imatrix_entries).unwrap_or_default(),
        ..Default::default()
    };
    quantize_with(input, output, ftype, &opts).unwrap_or_else(|rc| {
        panic!(
            "llama_model_quantize({} -> {}, {ftype}) failed with {rc}",
            input.display(),
            output.display()
        )
    });
}

/// A synthetic model's shape.
#[derive(Debug, Clone)]
pub struct Spec {
    pub arch: &'static str,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx: u64,
    pub n_expert: u64,
    /// Write `output.weight` (untied embeddings).
    pub output: bool,
    /// Write the tensors in a shuffled order.
    pub shuffle: bool,
}

impl Spec {
    /// GPT-2 small's width (n_embd 768, so every K-quant fits), 3 layers,
    /// untied output, a small vocabulary.
    pub fn gpt2_wide() -> Spec {
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
pub fn build(s: &Spec, path: &Path, seed: u64) -> PolicyModel {
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
