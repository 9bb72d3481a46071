//! A LoRA adapter drop whose `kvant.toml` says `adapter = "lora"`: the
//! fine-tune is registered in Ollama as its base model plus an adapter
//! layer, instead of merged.
//!
//! Converting (in the conversion child, like any drop):
//! 1. the adapter is written as a GGUF LoRA adapter (F32 factors, what
//!    `kvant convert --as-adapter` writes), which also refuses what
//!    llama.cpp cannot apply at run time (DoRA, whole saved modules,
//!    embedding adapters) and finds the base by the usual rules;
//! 2. the base is converted once to every type, named after the base (its
//!    bytes are those of the base's own drop, so Ollama stores the blob
//!    once and a host that has it is not sent it again);
//! 3. beside each base GGUF a Modelfile with `FROM` (the base GGUF) and
//!    `ADAPTER` (the adapter GGUF).
//!
//! ```text
//! <output>/<model>/<base>-<type>.gguf        the base, per type
//! <output>/<model>/<base>-<type>.Modelfile   FROM ./<base>-<type>.gguf + ADAPTER ./<model>-lora.gguf
//! <output>/<model>/<model>-lora.gguf         the adapter
//! <output>/<model>/<model>.report.json
//! ```
//!
//! The journal holds one output per type (the base GGUF, tagged
//! `<model>:<type>` and `<model>:<type>-<version>`) and the adapter as one
//! more output without tags: recovery checks its digest like any output,
//! and registration ([`use_journaled_digest`]) uploads it under the digest
//! journaled when it was written. Every file appears by rename when
//! complete.
//!
//! Registering, per host and type: `<model>:<type>` is created from the
//! base GGUF plus the adapter layer; then the base itself as
//! `<base>:<type>` unless the host lists that name already (the base's own
//! drop, or an earlier adapter of it, registered it): it shares the blob.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde_json::json;
use tracing::info;

use super::job::{record_outputs, write_report, Converted};
use super::settings::ModelSettings;
use super::state::OutputRecord;
use crate::convert::{self, convert_as_adapter, ConvertRequest, OutputSpec, Progress};
use crate::gguf::GgufFile;
use crate::ollama::{
    listed, register, sanitize_model_name, AdapterLayer, Client, OllamaError, Registered,
    Registration,
};
use crate::quant::FileType;

/// The journal's `file_type` of the adapter output.
const ADAPTER_OUTPUT: &str = "lora";

/// Converts the adapter folder `dir` (a drop) for `adapter = "lora"`
/// into `output/<model>/` (module doc).
pub(super) fn convert_lora_drop(
    output: &Path,
    types: &[FileType],
    dir: &Path,
    content_sha: &str,
    settings: &ModelSettings,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Converted, String> {
    if !crate::adapter::is_adapter_folder(dir) {
        return Err(format!(
            "{}: adapter = \"lora\", but {} is not a LoRA adapter folder (no {})",
            dir.join("kvant.toml").display(),
            dir.display(),
            crate::adapter::CONFIG_NAME
        ));
    }
    let model = sanitize_model_name(
        &settings
            .name
            .clone()
            .unwrap_or_else(|| convert::default_name(dir)),
    );
    let out_dir = output.join(&model);
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let lora_name = format!("{model}-lora.gguf");
    let lora_path = out_dir.join(&lora_name);
    let lora = convert_as_adapter(dir, &lora_path, Some(&model), dir.parent())
        .map_err(|e| e.to_string())?;
    let base_model = sanitize_model_name(&convert::default_name(&lora.base));
    let drop_name = dir.file_name().unwrap_or_default().to_string_lossy();
    info!(drop = %drop_name, base = %lora.base.display(), "adapter written; converting its base {base_model}");
    let req = ConvertRequest {
        source: lora.base.clone(),
        outputs: types
            .iter()
            .map(|t| OutputSpec {
                file_type: *t,
                path: out_dir.join(format!("{base_model}-{}.gguf", t.name())),
            })
            .collect(),
        name: Some(base_model),
        ..Default::default()
    };
    let mut report = match convert::convert(&req, progress, cancel) {
        Ok(r) => r,
        Err(e) => {
            // No adapter without its base: the drop is redone whole.
            let _ = std::fs::remove_file(&lora_path);
            return Err(e.to_string());
        }
    };
    report.hparams["adapter"] = json!({
        "mode": "lora",
        "folder": dir,
        "base": lora.base,
        "file": lora.adapter.path,
        "sha256": lora.adapter.sha256,
    });
    let version_label = format!("v{}", &content_sha[..content_sha.len().min(8)]);
    let adapter_ref = format!("./{lora_name}");
    let mut records = record_outputs(
        &report,
        settings,
        None,
        &model,
        &version_label,
        Some(&adapter_ref),
    )?;
    records.push(OutputRecord {
        file_type: ADAPTER_OUTPUT.into(),
        path: lora.adapter.path.clone(),
        sha256: lora.adapter.sha256.clone(),
        tags: vec![],
        registered: false,
        held_back: None,
    });
    write_report(
        &out_dir.join(format!("{model}.report.json")),
        dir,
        &report,
        None,
        serde_json::json!({ "measured": false, "reason": "an adapter layer is registered as it is, not measured" }),
    )?;
    Ok(Converted {
        model,
        version_label,
        outputs: records,
        best_version: None,
    })
}

/// The adapter a Modelfile's `ADAPTER value` names (relative to the
/// Modelfile at `modelfile`), with its architecture read from the file;
/// its digest is filled in from the journal ([`use_journaled_digest`]).
pub(super) fn adapter_layer(modelfile: &Path, value: &str) -> Result<AdapterLayer, OllamaError> {
    let path = modelfile
        .parent()
        .map(|d| d.join(value))
        .unwrap_or_else(|| value.into());
    let f = GgufFile::open(&path).map_err(|e| OllamaError::Io {
        path: path.clone(),
        source: std::io::Error::other(format!("the ADAPTER of {}: {e}", modelfile.display())),
    })?;
    let arch = f
        .metadata
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    Ok(AdapterLayer {
        path,
        sha256: String::new(),
        arch,
    })
}

/// Gives `reg`'s adapter the digest journaled when it was written, so a
/// file changed since is refused by the server rather than registered.
pub(super) fn use_journaled_digest(
    reg: &mut Registration,
    outputs: &[OutputRecord],
) -> Result<(), OllamaError> {
    let Some(layer) = reg.adapter.as_mut() else {
        return Ok(());
    };
    let journaled = outputs
        .iter()
        .find(|o| o.tags.is_empty() && o.path == layer.path)
        .ok_or_else(|| OllamaError::Io {
            path: reg.gguf.with_extension("Modelfile"),
            source: std::io::Error::other(format!(
                "its ADAPTER {} is not an output of this drop",
                layer.path.display()
            )),
        })?;
    layer.sha256 = journaled.sha256.clone();
    Ok(())
}

/// `<base>:<type>` for a base output of an adapter drop (its file is
/// `<base>-<type>.gguf`, [`convert_lora_drop`]).
fn base_tag(out: &OutputRecord) -> Option<String> {
    let stem = out.path.file_name()?.to_str()?;
    let base = stem.strip_suffix(&format!("-{}.gguf", out.file_type))?;
    Some(format!("{base}:{}", out.file_type))
}

/// After `fine_tune` (base + adapter) is registered from `out`, registers
/// the base alone as `<base>:<type>` when the host does not list that name
/// yet; what the server reported, if it was registered.
pub(super) async fn register_base_if_missing(
    client: &Client,
    fine_tune: &Registration,
    out: &OutputRecord,
) -> Result<Option<Registered>, OllamaError> {
    let Some(name) = fine_tune.adapter.as_ref().and_then(|_| base_tag(out)) else {
        return Ok(None);
    };
    if listed(client, &name).await?.is_some() {
        return Ok(None);
    }
    let base = Registration {
        name,
        adapter: None,
        ..fine_tune.clone()
    };
    register(client, &base).await.map(Some)
}
