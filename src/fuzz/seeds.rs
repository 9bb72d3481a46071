//! The starting corpus of each fuzz target, from the real fixtures.

use std::path::Path;

use super::{convert_seed, Target};
use crate::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter, Metadata, TensorInfo};
use crate::quant::{FileType, GgmlType};
use crate::source::torch;

fn read(fixtures: &Path, rel: &str) -> Result<Vec<u8>, String> {
    std::fs::read(fixtures.join(rel)).map_err(|e| format!("fixture {rel}: {e}"))
}

fn all(fixtures: &Path, rels: &[&str]) -> Result<Vec<Vec<u8>>, String> {
    rels.iter().map(|r| read(fixtures, r)).collect()
}

const TORCH_ZIPS: [&str; 6] = [
    "nanogpt-az/best_model.pt",
    "nanogpt-az/ckpt.pt",
    "nanogpt-az-fp16/ckpt.pt",
    "bad/evil-pickle.pt",
    "bad/complex-dtype.pt",
    "bad/path-traversal.pt",
];

const TORCH_LEGACY: [&str; 2] = [
    "nanogpt-az-legacy-format/ckpt.pt",
    "nanogpt-az-legacy-format/best_model.pt",
];

const JINJA: [&str; 4] = [
    "hf-llama-az/chat_template.jinja",
    "hf-llama3-az/chat_template.jinja",
    "hf-mistral-sp-az/chat_template.jinja",
    "hf-qwen2-az/chat_template.jinja",
];

/// The seeds of `target`.
pub fn seeds(target: Target, fixtures: &Path, scratch: &Path) -> Result<Vec<Vec<u8>>, String> {
    match target {
        Target::Pickle => {
            let mut out = Vec::new();
            for rel in TORCH_ZIPS.iter().chain(&TORCH_LEGACY) {
                out.extend(torch::fuzz_pickles(&read(fixtures, rel)?));
            }
            Ok(out)
        }
        Target::Zip => all(fixtures, &TORCH_ZIPS),
        Target::LegacyTorch => all(fixtures, &TORCH_LEGACY),
        Target::Safetensors => all(
            fixtures,
            &[
                "hf-gpt2-az/model.safetensors",
                "lora-qwen2-rslora/adapter_model.safetensors",
                "dora-llama-az/adapter_model.safetensors",
                "bad/lying-header.safetensors",
                "bad/huge-header-len.safetensors",
            ],
        ),
        Target::Gguf => gguf_seeds(fixtures, scratch),
        Target::TokenizerJson => all(
            fixtures,
            &[
                "tokenizers/az_bpe_tokenizer.json",
                "tokenizers/az_bpe_whitespace.json",
                "hf-llama3-az/tokenizer.json",
                "hf-qwen2-az/tokenizer.json",
                "hf-mistral-sp-az/tokenizer.json",
            ],
        ),
        Target::ChatTemplate => all(fixtures, &JINJA),
        Target::Modelfile => modelfile_seeds(fixtures),
        Target::Imatrix => imatrix_seeds(fixtures, scratch),
    }
}

/// Two real conversions: a Llama folder at Q4_K_M, nanoGPT at Q8_0.
fn gguf_seeds(fixtures: &Path, scratch: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (rel, ft, n_head, name) in [
        ("hf-llama-az", FileType::Q4_K_M, None, "llama.gguf"),
        (
            "nanogpt-az/best_model.pt",
            FileType::Q8_0,
            Some(4),
            "gpt2.gguf",
        ),
    ] {
        let path = scratch.join(name);
        convert_seed(&fixtures.join(rel), ft, &path, n_head)?;
        out.push(std::fs::read(&path).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Modelfiles as kvant writes them, with the templates kvant derives from
/// the fixtures' chat templates.
fn modelfile_seeds(fixtures: &Path) -> Result<Vec<Vec<u8>>, String> {
    let specials = crate::tokenizer::chat_template::Specials {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        add_bos_token: false,
    };
    let mut out = Vec::new();
    for rel in JINJA {
        let jinja = String::from_utf8_lossy(&read(fixtures, rel)?).into_owned();
        let template = crate::tokenizer::chat_template::translate(&jinja, &specials)
            .map(|t| t.template)
            .unwrap_or_else(|_| "{{ .Prompt }}".into());
        let m = crate::modelfile::Modelfile {
            from: "./model-q4_k_m.gguf".into(),
            template: Some(template),
            system: Some("Sən köməkçisən.\nQısa cavab ver.".into()),
            parameters: vec![
                ("num_ctx".into(), "256".into()),
                ("stop".into(), "</s>".into()),
            ],
            license: Some("MIT".into()),
            adapter: None,
        };
        out.push(m.render().map_err(|e| e.to_string())?.into_bytes());
    }
    Ok(out)
}

/// Importance matrices for the Llama fixture's tensors, in both forms.
fn imatrix_seeds(fixtures: &Path, scratch: &Path) -> Result<Vec<Vec<u8>>, String> {
    let model = scratch.join("imatrix-model.gguf");
    convert_seed(&fixtures.join("hf-llama-az"), FileType::F32, &model, None)?;
    let f = GgufFile::open(&model).map_err(|e| e.to_string())?;
    let rows: Vec<(String, usize)> = f
        .tensors
        .iter()
        .filter(|t| t.info.ne.len() == 2)
        .map(|t| (t.info.name.clone(), t.info.ne[0] as usize))
        .collect();
    let mut legacy = (rows.len() as i32).to_le_bytes().to_vec();
    for (name, n) in &rows {
        legacy.extend((name.len() as i32).to_le_bytes());
        legacy.extend(name.as_bytes());
        legacy.extend(10i32.to_le_bytes());
        legacy.extend((*n as i32).to_le_bytes());
        for i in 0..*n {
            legacy.extend((1.0f32 + i as f32 / 64.0).to_le_bytes());
        }
    }
    legacy.extend(10i32.to_le_bytes());
    legacy.extend(9i32.to_le_bytes());
    legacy.extend(b"train.txt");

    let mut md = Metadata::new();
    md.set("general.type", "imatrix");
    md.set(
        "imatrix.datasets",
        GgufValue::Array(GgufArray::String(vec!["train.txt".into()])),
    );
    md.set("imatrix.chunk_count", GgufValue::U32(10));
    md.set("imatrix.chunk_size", GgufValue::U32(512));
    let mut infos = Vec::new();
    for (name, n) in &rows {
        infos.push(TensorInfo::new(
            format!("{name}.in_sum2"),
            vec![*n as u64, 1],
            GgmlType::F32,
        ));
        infos.push(TensorInfo::new(
            format!("{name}.counts"),
            vec![1, 1],
            GgmlType::F32,
        ));
    }
    let path = scratch.join("imatrix.gguf");
    let mut w = GgufWriter::create(&path, &md, infos).map_err(|e| e.to_string())?;
    for (name, n) in &rows {
        let sums: Vec<u8> = (0..*n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        w.write_tensor(&format!("{name}.in_sum2"), &sums)
            .map_err(|e| e.to_string())?;
        w.write_tensor(&format!("{name}.counts"), &10f32.to_le_bytes())
            .map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    let gguf = std::fs::read(&path).map_err(|e| e.to_string())?;
    Ok(vec![legacy, gguf])
}
