//! The torch zip reader on real nanoGPT checkpoints written by PyTorch:
//! names, shapes, dtypes, config, shared storages and values, checked
//! against the fixtures' own `expected.json` and against the same weights
//! read through the independent safetensors path.

mod support;

use kvant::source::{self, Checkpoint, DType, SourceFormat};
use support::fixtures;

fn open(rel: &str) -> Checkpoint {
    let p = fixtures::path(rel);
    source::open(&p).unwrap_or_else(|e| panic!("opening {rel}: {e}"))
}

/// The state_dict names and shapes nanoGPT's model.py registers.
fn nanogpt_layout(args: &serde_json::Value, with_bias: bool) -> Vec<(String, Vec<usize>)> {
    let n = |k: &str| args[k].as_u64().expect("model_args int") as usize;
    let (l, c, v, t) = (n("n_layer"), n("n_embd"), n("vocab_size"), n("block_size"));
    let mut out = vec![
        ("transformer.wte.weight".to_string(), vec![v, c]),
        ("transformer.wpe.weight".to_string(), vec![t, c]),
    ];
    for i in 0..l {
        let p = format!("transformer.h.{i}.");
        let mut add = |s: &str, shape: Vec<usize>, is_bias: bool| {
            if !is_bias || with_bias {
                out.push((format!("{p}{s}"), shape));
            }
        };
        add("ln_1.weight", vec![c], false);
        add("ln_1.bias", vec![c], true);
        add("attn.c_attn.weight", vec![3 * c, c], false);
        add("attn.c_attn.bias", vec![3 * c], true);
        add("attn.c_proj.weight", vec![c, c], false);
        add("attn.c_proj.bias", vec![c], true);
        add("ln_2.weight", vec![c], false);
        add("ln_2.bias", vec![c], true);
        add("mlp.c_fc.weight", vec![4 * c, c], false);
        add("mlp.c_fc.bias", vec![4 * c], true);
        add("mlp.c_proj.weight", vec![c, 4 * c], false);
        add("mlp.c_proj.bias", vec![c], true);
    }
    out.push(("transformer.ln_f.weight".to_string(), vec![c]));
    if with_bias {
        out.push(("transformer.ln_f.bias".to_string(), vec![c]));
    }
    out.push(("lm_head.weight".to_string(), vec![v, c]));
    out
}

fn assert_layout(ck: &Checkpoint, expected: &[(String, Vec<usize>)]) {
    for (name, shape) in expected {
        let t = ck
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} missing from {}", ck.path.display()));
        assert_eq!(&t.shape, shape, "{name}");
    }
}

fn values(ck: &Checkpoint, name: &str) -> Vec<f32> {
    ck.tensor(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_f32()
        .expect("float tensor")
}

#[test]
fn nanogpt_ckpt_lists_the_model_and_its_model_args() {
    let ck = open("nanogpt-az/ckpt.pt");
    let expected = fixtures::json("nanogpt-az/expected.json");
    let args = &expected["model_args"];
    assert_eq!(ck.format, SourceFormat::TorchZip);
    let layout = nanogpt_layout(args, true);
    assert_layout(&ck, &layout);
    // Exactly the model: no optimizer state, no `_orig_mod.` prefixes.
    assert_eq!(ck.tensors.len(), layout.len());
    assert!(ck.tensors.iter().all(|t| !t.name.starts_with("_orig_mod.")));
    assert!(ck.tensors.iter().all(|t| t.dtype == DType::F32));
    let config = ck.config.as_ref().expect("model_args become the config");
    for (k, v) in args.as_object().expect("object") {
        assert_eq!(&config[k], v, "model_args.{k}");
    }
    assert!(ck.extra["iter_num"].as_u64().expect("iter_num int") > 0);
    let loss = ck.extra["best_val_loss"]
        .as_f64()
        .expect("0-d tensor read as a number");
    assert!(loss.is_finite() && loss > 0.0 && loss < 20.0, "{loss}");
    assert!(ck.extra["config"].is_object());
    assert!(!ck.extra.contains_key("optimizer"));
    assert!(!ck.extra.contains_key("model"));
}

#[test]
fn tied_lm_head_shares_the_embedding_bytes() {
    let ck = open("nanogpt-az/ckpt.pt");
    let wte = ck.tensor("transformer.wte.weight").expect("wte");
    let head = ck.tensor("lm_head.weight").expect("lm_head");
    let (a, b) = (
        wte.contiguous_bytes().expect("contiguous"),
        head.contiguous_bytes().expect("contiguous"),
    );
    assert_eq!(a.as_ptr(), b.as_ptr(), "one storage, one range of the map");
    assert_eq!(a.len(), 2048 * 128 * 4);
}

#[test]
fn weights_have_trained_values() {
    let ck = open("nanogpt-az/ckpt.pt");
    for t in &ck.tensors {
        let v = t.to_f32().expect("float");
        assert!(v.iter().all(|x| x.is_finite()), "{} not finite", t.name);
    }
    for i in 0..4 {
        let w = values(&ck, &format!("transformer.h.{i}.ln_1.weight"));
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean > 0.3 && mean < 3.0, "ln_1 mean {mean}");
    }
    // Trained weights are not constant.
    let wte = values(&ck, "transformer.wte.weight");
    let spread =
        wte.iter().cloned().fold(f32::MIN, f32::max) - wte.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.1, "wte spread {spread}");
}

#[test]
fn bare_state_dict_has_the_same_weights_and_no_config() {
    let bare = open("nanogpt-az/best_model.pt");
    let full = open("nanogpt-az/ckpt.pt");
    let args = fixtures::json("nanogpt-az/expected.json")["model_args"].clone();
    let layout = nanogpt_layout(&args, true);
    assert_layout(&bare, &layout);
    assert_eq!(bare.tensors.len(), layout.len());
    assert!(bare.config.is_none());
    assert!(bare.tensor("_metadata").is_none());
    for (name, _) in &layout {
        assert_eq!(values(&bare, name), values(&full, name), "{name}");
    }
}

#[test]
fn torch_weights_equal_the_hf_export_read_through_safetensors() {
    // hf-gpt2-az is the same model exported to GPT2LMHeadModel: Conv1D
    // weights are the transpose of nanoGPT's Linear weights.
    let nano = open("nanogpt-az/ckpt.pt");
    let hf = open("hf-gpt2-az");
    for i in 0..4 {
        let name = format!("transformer.h.{i}.attn.c_attn.weight");
        let a = nano.tensor(&name).expect("nano");
        let b = hf.tensor(&name).expect("hf");
        assert_eq!(b.shape, vec![a.shape[1], a.shape[0]]);
        let (av, bv) = (a.to_f32().expect("f32"), b.to_f32().expect("f32"));
        let (rows, cols) = (a.shape[0], a.shape[1]);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(av[r * cols + c], bv[c * rows + r], "{name}[{r},{c}]");
            }
        }
        let ln = format!("transformer.h.{i}.ln_2.bias");
        assert_eq!(values(&nano, &ln), values(&hf, &ln));
    }
}

#[test]
fn fp16_checkpoint_matches_the_f32_one_within_half_precision() {
    let half = open("nanogpt-az-fp16/ckpt.pt");
    let full = open("nanogpt-az/ckpt.pt");
    assert!(half.tensors.iter().all(|t| t.dtype == DType::F16));
    let args = fixtures::json("nanogpt-az/expected.json")["model_args"].clone();
    assert_layout(&half, &nanogpt_layout(&args, true));
    let (h, f) = (
        values(&half, "transformer.wte.weight"),
        values(&full, "transformer.wte.weight"),
    );
    assert_eq!(h.len(), f.len());
    for (i, (a, b)) in h.iter().zip(&f).enumerate() {
        // f16 rounding: half an ulp, 2^-11 relative, 2^-25 absolute near 0.
        let tol = b.abs() / 2048.0 + 3e-8;
        assert!((a - b).abs() <= tol, "wte[{i}]: f16 {a} vs f32 {b}");
    }
}

#[test]
fn nobias_legacy_has_no_biases_but_keeps_mask_buffers() {
    let ck = open("nanogpt-az-nobias-legacy/ckpt.pt");
    let args = fixtures::json("nanogpt-az-nobias-legacy/expected.json")["model_args"].clone();
    assert_eq!(args["bias"], serde_json::Value::Bool(false));
    let layout = nanogpt_layout(&args, false);
    assert_layout(&ck, &layout);
    for i in 0..4 {
        let mask = ck
            .tensor(&format!("transformer.h.{i}.attn.bias"))
            .expect("causal mask buffer kept");
        assert_eq!(mask.shape, vec![1, 1, 128, 128]);
    }
    let weights_biases = ck
        .tensors
        .iter()
        .filter(|t| t.name.ends_with(".bias") && !t.name.ends_with("attn.bias"))
        .count();
    assert_eq!(weights_biases, 0);
    assert_eq!(ck.tensors.len(), layout.len() + 4);
    assert_eq!(ck.config.as_ref().expect("model_args")["bias"], false);
}

#[test]
fn k256_checkpoint_reads_with_its_own_shapes() {
    let ck = open("nanogpt-k256/ckpt.pt");
    let args = fixtures::json("nanogpt-k256/expected.json")["model_args"].clone();
    let layout = nanogpt_layout(&args, true);
    assert_layout(&ck, &layout);
    assert_eq!(ck.tensors.len(), layout.len());
    assert_eq!(ck.config.as_ref().expect("model_args")["n_embd"], 256);
}
