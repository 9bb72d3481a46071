//! One attempt of the whole registration sequence against one server: version → blob HEAD →
//! upload if missing → create (JSON or legacy Modelfile form by version) → verify via tags and
//! show → smoke generate. No retries across attempts here: the daemon owns backoff and uses
//! [`OllamaError::is_retryable`] to decide.

use super::api::CreateRequest;
use super::client::{supports_files_create, Client};
use super::error::OllamaError;
use super::names::validate_name;
use crate::modelfile::Modelfile;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What to register.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Model name with tag, e.g. `az-gpt:q4_k_m-iter2000`.
    pub name: String,
    /// The GGUF on disk.
    pub gguf: PathBuf,
    /// `sha256:<lowercase hex>` of the GGUF (computed by the caller while writing it).
    pub digest: String,
    /// Template (`{{ .Prompt }}` for base models).
    pub template: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// Parameters, values as JSON (`num_ctx` number, `stop` array of strings).
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// License text.
    pub license: Option<String>,
    /// Expected `details.family` (e.g. `gpt2`).
    pub expect_family: String,
    /// Expected `details.quantization_level` (e.g. `Q4_K_M`, `F16`).
    pub expect_quantization: String,
    /// Smoke-test prompt.
    pub smoke_prompt: String,
}

/// Result of a successful registration.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The server's version.
    pub server_version: String,
    /// The name as `/api/tags` shows it.
    pub name: String,
    /// Whether the blob was uploaded in this attempt (false: already present).
    pub uploaded: bool,
    /// Whether the legacy Modelfile create was used.
    pub legacy_create: bool,
    /// Text the smoke generation produced.
    pub generated: String,
}

/// `num_ctx` etc. as Modelfile `PARAMETER` lines (arrays become one line per element).
fn parameter_lines(params: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in params {
        let values: Vec<&serde_json::Value> = match v {
            serde_json::Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = match v {
                serde_json::Value::String(s) => format!("\"{s}\""),
                other => other.to_string(),
            };
            out.push((k.clone(), text));
        }
    }
    out
}

/// Run the sequence once. Errors carry their retryability.
pub async fn register(client: &Client, reg: &Registration) -> Result<Registered, OllamaError> {
    validate_name(&reg.name)?;
    let server_version = client.version().await?;
    let mut uploaded = false;
    if !client.blob_exists(&reg.digest).await? {
        match client.upload_blob(&reg.gguf, &reg.digest).await {
            Err(OllamaError::Api {
                status: 400,
                ref message,
                ..
            }) if message.starts_with("digest mismatch") => {
                client.upload_blob(&reg.gguf, &reg.digest).await?;
            }
            other => other?,
        }
        uploaded = true;
    }
    let legacy_create = !supports_files_create(&server_version);
    if legacy_create {
        let hex = reg.digest.trim_start_matches("sha256:");
        let mf = Modelfile {
            from: format!("@sha256:{hex}"),
            template: reg.template.clone(),
            system: reg.system.clone(),
            parameters: parameter_lines(&reg.parameters),
            license: reg.license.clone(),
        };
        let text = mf.render().map_err(|e| OllamaError::Protocol {
            endpoint: "/api/create".into(),
            reason: e.to_string(),
        })?;
        client.create_legacy(&reg.name, &text).await?;
    } else {
        let file_name = reg
            .gguf
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".gguf"))
            .unwrap_or_else(|| "model.gguf".to_string());
        let req = CreateRequest {
            model: reg.name.clone(),
            files: BTreeMap::from([(file_name, reg.digest.clone())]),
            template: reg.template.clone(),
            system: reg.system.clone(),
            parameters: reg.parameters.clone(),
            license: reg.license.clone(),
        };
        client.create(&req).await?;
    }
    let want = if reg.name.contains(':') {
        reg.name.clone()
    } else {
        format!("{}:latest", reg.name)
    };
    let tags = client.tags().await?;
    let entry = tags
        .models
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(&want))
        .ok_or_else(|| OllamaError::Verification {
            model: want.clone(),
            reason: "not listed by /api/tags after create".into(),
        })?;
    let verify = |what: &str, got: &str, expected: &str| {
        if got.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(OllamaError::Verification {
                model: want.clone(),
                reason: format!("{what} is {got:?}, expected {expected:?}"),
            })
        }
    };
    verify("tags family", &entry.details.family, &reg.expect_family)?;
    verify(
        "tags quantization_level",
        &entry.details.quantization_level,
        &reg.expect_quantization,
    )?;
    let shown = client.show(&want).await?;
    verify("show family", &shown.details.family, &reg.expect_family)?;
    verify(
        "show quantization_level",
        &shown.details.quantization_level,
        &reg.expect_quantization,
    )?;
    let generated = client.generate(&want, &reg.smoke_prompt, 8).await?;
    Ok(Registered {
        server_version,
        name: entry.name.clone(),
        uploaded,
        legacy_create,
        generated,
    })
}
