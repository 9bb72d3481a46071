//! safetensors files and Hugging Face folders written by transformers:
//! layout, config, and sharded/.bin folder variants built from them.

mod support;

use std::collections::HashMap;

use kvant::source::{self, Checkpoint, DType, SourceFormat};
use support::fixtures;

fn open(rel: &str) -> Checkpoint {
    let p = fixtures::path(rel);
    source::open(&p).unwrap_or_else(|e| panic!("opening {rel}: {e}"))
}

#[test]
fn hf_gpt2_folder_has_conv1d_shapes_and_no_lm_head() {
    let ck = open("hf-gpt2-az");
    assert_eq!(ck.format, SourceFormat::HfFolder);
    assert_eq!(ck.config, Some(fixtures::json("hf-gpt2-az/config.json")));
    assert!(
        ck.tensor("lm_head.weight").is_none(),
        "tied lm_head is omitted"
    );
    let shape = |n: &str| ck.tensor(n).unwrap_or_else(|| panic!("{n}")).shape.clone();
    assert_eq!(shape("transformer.wte.weight"), vec![2048, 128]);
    assert_eq!(shape("transformer.wpe.weight"), vec![128, 128]);
    for i in 0..4 {
        let p = format!("transformer.h.{i}.");
        assert_eq!(shape(&format!("{p}attn.c_attn.weight")), vec![128, 384]);
        assert_eq!(shape(&format!("{p}attn.c_proj.weight")), vec![128, 128]);
        assert_eq!(shape(&format!("{p}mlp.c_fc.weight")), vec![128, 512]);
        assert_eq!(shape(&format!("{p}mlp.c_proj.weight")), vec![512, 128]);
    }
    assert!(ck.tensors.iter().all(|t| t.dtype == DType::F32));
    for t in &ck.tensors {
        assert!(
            t.to_f32().expect("f32").iter().all(|x| x.is_finite()),
            "{}",
            t.name
        );
    }
}

#[test]
fn hf_llama_folder_has_gqa_shapes_and_its_own_lm_head() {
    let ck = open("hf-llama-az");
    let config = ck.config.clone().expect("config.json");
    assert_eq!(config["model_type"], "llama");
    let shape = |n: &str| ck.tensor(n).unwrap_or_else(|| panic!("{n}")).shape.clone();
    assert_eq!(shape("lm_head.weight"), vec![2048, 128]);
    assert_eq!(shape("model.embed_tokens.weight"), vec![2048, 128]);
    for i in 0..4 {
        let p = format!("model.layers.{i}.");
        assert_eq!(
            shape(&format!("{p}self_attn.q_proj.weight")),
            vec![128, 128]
        );
        assert_eq!(shape(&format!("{p}self_attn.k_proj.weight")), vec![64, 128]);
        assert_eq!(shape(&format!("{p}self_attn.v_proj.weight")), vec![64, 128]);
        assert_eq!(shape(&format!("{p}mlp.gate_proj.weight")), vec![352, 128]);
        assert_eq!(shape(&format!("{p}mlp.down_proj.weight")), vec![128, 352]);
    }
    let lm = ck
        .tensor("lm_head.weight")
        .expect("lm")
        .to_f32()
        .expect("f32");
    let emb = ck
        .tensor("model.embed_tokens.weight")
        .expect("emb")
        .to_f32()
        .expect("f32");
    assert_ne!(lm, emb, "untied output");
}

#[test]
fn a_bare_safetensors_file_opens_with_its_metadata() {
    let folder = open("hf-gpt2-az");
    let file = open("hf-gpt2-az/model.safetensors");
    assert_eq!(file.format, SourceFormat::Safetensors);
    assert!(file.config.is_none());
    assert_eq!(file.tensors.len(), folder.tensors.len());
    // transformers writes {"format": "pt"}.
    assert_eq!(
        file.extra.get("format").and_then(|v| v.as_str()),
        Some("pt")
    );
}

fn tensor_bytes(ck: &Checkpoint) -> HashMap<String, (Vec<usize>, Vec<u8>)> {
    ck.tensors
        .iter()
        .map(|t| {
            let b = t.contiguous_bytes().expect("contiguous").to_vec();
            (t.name.clone(), (t.shape.clone(), b))
        })
        .collect()
}

#[test]
fn a_sharded_safetensors_folder_reads_like_the_single_file() {
    let single = open("hf-gpt2-az");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixtures::path("hf-gpt2-az/config.json"),
        dir.path().join("config.json"),
    )
    .expect("copy");
    let mut weight_map = serde_json::Map::new();
    let half = single.tensors.len() / 2;
    for (k, part) in [&single.tensors[..half], &single.tensors[half..]]
        .iter()
        .enumerate()
    {
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|t| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    t.shape.clone(),
                    t.contiguous_bytes().expect("contiguous"),
                )
                .expect("view");
                (t.name.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(&file)).expect("write shard");
        for t in part.iter() {
            weight_map.insert(t.name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .expect("index");
    let sharded = source::open(dir.path()).expect("sharded folder");
    assert_eq!(sharded.format, SourceFormat::HfFolder);
    assert_eq!(sharded.tensors.len(), single.tensors.len());
    assert_eq!(tensor_bytes(&sharded), tensor_bytes(&single));

    // An index naming a file outside the folder is refused.
    let evil = serde_json::json!({"weight_map": {"x": "../model.safetensors"}});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        evil.to_string(),
    )
    .expect("index");
    let msg = source::open(dir.path())
        .expect_err("escaping shard")
        .to_string();
    assert!(msg.contains("not a plain file"), "{msg}");
}

#[test]
fn a_pytorch_model_bin_folder_reads_through_the_torch_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"gpt2"}"#).expect("config");
    std::fs::copy(
        fixtures::path("nanogpt-az/best_model.pt"),
        dir.path().join("pytorch_model.bin"),
    )
    .expect("copy");
    let ck = source::open(dir.path()).expect("bin folder");
    assert_eq!(ck.format, SourceFormat::HfFolder);
    assert_eq!(ck.config.as_ref().expect("config")["model_type"], "gpt2");
    let bare = open("nanogpt-az/best_model.pt");
    assert_eq!(tensor_bytes(&ck), tensor_bytes(&bare));

    // config.json but no weights: the message lists what was looked for.
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).expect("rm");
    let msg = source::open(dir.path())
        .expect_err("no weights")
        .to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("pytorch_model.bin"),
        "{msg}"
    );
}
