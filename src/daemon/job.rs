//! Converting one drop: find its checkpoint and settings, convert to every
//! type in one pass, and write each GGUF's Modelfile and the model's
//! report beside them (all atomically).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::json;
use tracing::{info, warn};

use super::settings::{self, ModelSettings};
use super::state::OutputRecord;
use crate::convert::{self, ChatTemplate, ConvertReport, ConvertRequest, OutputSpec, Progress};
use crate::durable::write_atomic;
use crate::modelfile::Modelfile;
use crate::ollama::sanitize_model_name;
use crate::quant::FileType;

/// What a finished conversion hands to registration (sent by the
/// conversion child to the daemon as JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Converted {
    /// Ollama model name.
    pub model: String,
    /// Version label.
    pub version_label: String,
    /// Outputs.
    pub outputs: Vec<OutputRecord>,
}

/// The folder holding a drop's settings and tokenizer.
fn drop_dir(drop: &Path) -> PathBuf {
    if drop.is_dir() {
        drop.to_owned()
    } else {
        drop.parent().map(Path::to_owned).unwrap_or_default()
    }
}

/// The Modelfile for one output. `TEMPLATE`: the drop's `kvant.toml`
/// template if given, else the model's proven chat template, else
/// `{{ .Prompt }}`; `stop`: the end-of-text tokens plus the chat format's
/// end-of-turn strings (a user's own template keeps only the former).
pub fn modelfile_for(gguf: &Path, report: &ConvertReport, s: &ModelSettings) -> Modelfile {
    let mut parameters = vec![("num_ctx".to_owned(), report.context_length.to_string())];
    let chat_stops = match &s.template {
        Some(_) => &[][..],
        None => report.chat_template.stop(),
    };
    let mut stops: Vec<&String> = Vec::new();
    for stop in report.stop_tokens.iter().chain(chat_stops) {
        if !stops.contains(&stop) {
            stops.push(stop);
        }
    }
    for stop in stops {
        parameters.push(("stop".into(), stop.clone()));
    }
    for (k, v) in &s.parameters {
        parameters.push((
            k.clone(),
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string()),
        ));
    }
    Modelfile {
        from: format!(
            "./{}",
            gguf.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        template: Some(
            s.template
                .clone()
                .unwrap_or_else(|| report.chat_template.template().to_owned()),
        ),
        system: s.system.clone(),
        parameters,
        license: s.license.clone(),
        adapter: None,
    }
}

/// The drop's `types` from its kvant.toml in `dir`, else `default_types`.
fn drop_types(
    settings: &ModelSettings,
    default_types: &[FileType],
    dir: &Path,
) -> Result<Vec<FileType>, String> {
    match &settings.types {
        Some(names) => names
            .iter()
            .map(|n| n.parse::<FileType>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", dir.join("kvant.toml").display())),
        None => Ok(default_types.to_vec()),
    }
}

/// Converts `drop` into `output/<model>/` (blocking; `cancel` stops it
/// cleanly). `default_types` apply unless the drop's kvant.toml names its
/// own. The daemon runs this in a child process (`isolate`).
pub fn convert_drop(
    output: &Path,
    default_types: &[FileType],
    drop: &Path,
    content_sha: &str,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Converted, String> {
    let dir = drop_dir(drop);
    let settings = settings::load(&dir).map_err(|e| e.to_string())?;
    match settings.adapter.as_deref() {
        None | Some("merged") => {}
        Some("lora") if drop.is_dir() => {
            let types = drop_types(&settings, default_types, &dir)?;
            return super::adapter_job::convert_lora_drop(
                output,
                &types,
                &dir,
                content_sha,
                &settings,
                progress,
                cancel,
            );
        }
        Some("lora") => {
            return Err(format!(
                "{}: adapter = \"lora\" applies to a LoRA adapter folder, not to {}",
                dir.join("kvant.toml").display(),
                drop.display()
            ))
        }
        Some(other) => {
            return Err(format!(
                "{}: adapter = \"{other}\": expected \"merged\" or \"lora\"",
                dir.join("kvant.toml").display()
            ))
        }
    }
    let paths = convert::locate(drop).map_err(|e| e.to_string())?;
    let model = sanitize_model_name(
        &settings
            .name
            .clone()
            .unwrap_or_else(|| convert::default_name(&paths.checkpoint)),
    );
    let types = drop_types(&settings, default_types, &dir)?;
    let out_dir = output.join(&model);
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let outputs: Vec<OutputSpec> = types
        .iter()
        .map(|t| OutputSpec {
            file_type: *t,
            path: out_dir.join(format!("{model}-{}.gguf", t.name())),
        })
        .collect();
    let req = ConvertRequest {
        source: drop.to_owned(),
        outputs,
        name: Some(model.clone()),
        n_head: settings.n_head,
        ..Default::default()
    };
    let report = convert::convert(&req, progress, cancel).map_err(|e| e.to_string())?;
    let drop_name = drop
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match (&settings.template, &report.chat_template) {
        (Some(_), _) => info!(drop = %drop_name, "TEMPLATE from kvant.toml"),
        (None, c @ ChatTemplate::Fallback { .. }) => warn!(drop = %drop_name, "{}", c.summary()),
        (None, c) => info!(drop = %drop_name, "{}", c.summary()),
    }
    let version_label = report
        .version
        .clone()
        .unwrap_or_else(|| format!("v{}", &content_sha[..content_sha.len().min(8)]));
    let records = record_outputs(&report, &settings, &model, &version_label, None)?;
    let report_path = out_dir.join(format!("{model}.report.json"));
    write_report(&report_path, drop, &report, None)?;
    Ok(Converted {
        model,
        version_label,
        outputs: records,
    })
}

/// Writes each output's Modelfile beside it (with an `ADAPTER` line when
/// `adapter` is given, relative to the output's folder) and returns the
/// outputs' journal records, tagged `<model>:<type>` and
/// `<model>:<type>-<version>`.
pub(super) fn record_outputs(
    report: &ConvertReport,
    settings: &ModelSettings,
    model: &str,
    version_label: &str,
    adapter: Option<&str>,
) -> Result<Vec<OutputRecord>, String> {
    let mut records = Vec::new();
    for out in &report.outputs {
        let mut mf = modelfile_for(&out.path, report, settings);
        mf.adapter = adapter.map(str::to_owned);
        let text = mf.render().map_err(|e| format!("Modelfile: {e}"))?;
        let mf_path = out.path.with_extension("Modelfile");
        write_atomic(&mf_path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", mf_path.display()))?;
        records.push(OutputRecord {
            file_type: out.file_type.clone(),
            path: out.path.clone(),
            sha256: out.sha256.clone(),
            tags: vec![
                format!("{model}:{}", out.file_type),
                format!("{model}:{}-{version_label}", out.file_type),
            ],
            registered: false,
        });
    }
    Ok(records)
}

/// Writes `<model>.report.json`: source, hyper-parameters, per-tensor
/// types, bits per weight, sizes, timings, digests, and the registration
/// (with its smoke generation) once it happened.
pub fn write_report(
    path: &Path,
    source: &Path,
    report: &ConvertReport,
    registration: Option<serde_json::Value>,
) -> Result<(), String> {
    let v = json!({
        "source": source,
        "conversion": report,
        "registration": registration,
    });
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    write_atomic(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))
}
