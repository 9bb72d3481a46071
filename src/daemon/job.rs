//! Converting one drop: find its checkpoint and settings, convert to every
//! type in one pass (measured and gated when there is a held-out text),
//! and write each GGUF's Modelfile and the model's report and page beside
//! them (all atomically).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde_json::json;
use tracing::{info, warn};

use super::history;
use super::isolate::JobSpec;
use super::settings::{self, ModelSettings};
use super::state::OutputRecord;
use crate::convert::{self, ChatTemplate, ConvertReport, ConvertRequest, Progress};
use crate::durable::write_atomic;
use crate::eval::ChunkProgress;
use crate::measure::{self, TypeChoice};
use crate::modelfile::Modelfile;
use crate::ollama::sanitize_model_name;
use crate::quality::{modelfile_comment, QualityReport};
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
    /// The version `<model>:best` points at, when measured.
    #[serde(default)]
    pub best_version: Option<String>,
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

/// Converts the job's drop into `output/<model>/` (blocking; `cancel`
/// stops it cleanly), measuring every output against the checkpoint when
/// there is a held-out text, and gating what may be registered. The
/// daemon runs this in a child process (`isolate`).
pub fn convert_drop(
    job: &JobSpec,
    progress: &dyn Progress,
    chunks: &(dyn ChunkProgress + Sync),
    cancel: &AtomicBool,
) -> Result<Converted, String> {
    let drop = job.drop.as_path();
    let dir = drop_dir(drop);
    let settings = settings::load(&dir).map_err(|e| e.to_string())?;
    let choices = requested_types(&settings, &job.types, &dir)?;
    match settings.adapter.as_deref() {
        None | Some("merged") => {}
        Some("lora") if drop.is_dir() => {
            // An adapter layer is registered as it is: nothing to measure
            // or choose among, so `auto` is the usual mix.
            let types = TypeChoice::unmeasured(&choices);
            return super::adapter_job::convert_lora_drop(
                &job.output,
                &types,
                &dir,
                &job.content_sha,
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
    let out_dir = job.output.join(&model);
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let req = ConvertRequest {
        source: drop.to_owned(),
        name: Some(model.clone()),
        n_head: settings.n_head,
        ..Default::default()
    };
    let opts = settings
        .quality
        .or(&job.quality)
        .options(&dir, job.journal_dir.clone());
    let output_path = |t: FileType| out_dir.join(format!("{model}-{}.gguf", t.name()));
    let done = measure::convert_measured(
        &req,
        &choices,
        &output_path,
        &opts,
        progress,
        chunks,
        cancel,
    )
    .map_err(|e| e.to_string())?;
    let report = &done.conversion;
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
        .unwrap_or_else(|| format!("v{}", &job.content_sha[..job.content_sha.len().min(8)]));
    let (mut quality, not_measured) = match done.quality {
        Ok(q) => (Some(q), None),
        Err(not) => {
            info!(drop = %drop_name, "{}", not.reason);
            (None, Some(not.reason))
        }
    };
    let mut best_version = None;
    if let Some(q) = quality.as_mut() {
        q.version = Some(version_label.clone());
        gate_log(&drop_name, q);
        let first = report
            .outputs
            .first()
            .map(|o| o.file_type.as_str())
            .unwrap_or("");
        best_version = history::record(&out_dir, &model, &version_label, first, q);
    }
    let records = record_outputs(
        report,
        &settings,
        quality.as_ref(),
        &model,
        &version_label,
        None,
    )?;
    let report_path = out_dir.join(format!("{model}.report.json"));
    let quality_json = match &quality {
        Some(q) => json!(q),
        None => json!({ "measured": false, "reason": not_measured }),
    };
    write_report(&report_path, drop, report, None, quality_json)?;
    if let Some(q) = &quality {
        let page = out_dir.join(format!("{model}.report.html"));
        write_atomic(&page, q.render_html().as_bytes())
            .map_err(|e| format!("{}: {e}", page.display()))?;
        if !records.iter().any(OutputRecord::publishable) {
            return Err(format!(
                "quality gate: no type is within budget ({}); nothing registered, see {}",
                records
                    .iter()
                    .map(|r| format!("{}: {}", r.file_type, r.held_back.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join("; "),
                page.display()
            ));
        }
    }
    Ok(Converted {
        model,
        version_label,
        outputs: records,
        best_version,
    })
}

/// The drop's `types` (its kvant.toml), else the daemon's.
fn requested_types(
    settings: &ModelSettings,
    daemon_types: &[String],
    dir: &Path,
) -> Result<Vec<TypeChoice>, String> {
    let names = settings.types.as_deref().unwrap_or(daemon_types);
    names
        .iter()
        .map(|n| n.parse::<TypeChoice>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.join("kvant.toml").display()))
}

/// One WARN line per type the gate holds back, naming the drop, the
/// type, the measured value and the budget.
fn gate_log(drop: &str, q: &QualityReport) {
    for t in &q.types {
        if let Some(reason) = t.verdict.reason() {
            warn!(drop = %drop, file_type = %t.quality.file_type, "quality gate: {} not registered: {reason}", t.quality.file_type);
        } else {
            info!(drop = %drop, file_type = %t.quality.file_type, "measured {}: mean KLD {:.6}, PPL {:.4} ({:+.2} %), same top token {:.1} %", t.quality.file_type, t.quality.kld_mean, t.quality.ppl, t.quality.ppl_increase_pct(), t.quality.same_top_p * 100.0);
        }
    }
}

/// Writes each output's Modelfile beside it (the measured numbers as a
/// comment line; an `ADAPTER` line when `adapter` is given, relative to
/// the output's folder) and returns the outputs' journal records, tagged
/// `<model>:<type>` and `<model>:<type>-<version>` and gated by their
/// verdicts.
pub(super) fn record_outputs(
    report: &ConvertReport,
    settings: &ModelSettings,
    quality: Option<&QualityReport>,
    model: &str,
    version_label: &str,
    adapter: Option<&str>,
) -> Result<Vec<OutputRecord>, String> {
    let mut records = Vec::new();
    for out in &report.outputs {
        let measured = quality.and_then(|q| {
            q.types
                .iter()
                .find(|t| t.quality.file_type == out.file_type)
                .map(|t| (q, t))
        });
        let mut mf = modelfile_for(&out.path, report, settings);
        mf.adapter = adapter.map(str::to_owned);
        let mut text = mf.render().map_err(|e| format!("Modelfile: {e}"))?;
        if let Some((q, t)) = measured {
            text = format!("{}\n{text}", modelfile_comment(&t.quality, &q.text));
        }
        let mf_path = out.path.with_extension("Modelfile");
        write_atomic(&mf_path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", mf_path.display()))?;
        let held_back = measured.and_then(|(_, t)| t.verdict.reason());
        records.push(OutputRecord {
            file_type: out.file_type.clone(),
            path: out.path.clone(),
            sha256: out.sha256.clone(),
            tags: vec![
                format!("{model}:{}", out.file_type),
                format!("{model}:{}-{version_label}", out.file_type),
            ],
            registered: false,
            held_back,
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
    quality: serde_json::Value,
) -> Result<(), String> {
    let v = json!({
        "source": source,
        "conversion": report,
        "quality": quality,
        "registration": registration,
    });
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    write_atomic(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))
}
