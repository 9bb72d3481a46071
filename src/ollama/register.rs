//! Registering a GGUF file as an Ollama model, one attempt of the whole
//! sequence: version → blob (HEAD, upload if missing) → create → verify
//! (`/api/tags`, `/api/show`) → a smoke generation that must return text.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::client::{Client, Version, JSON_CREATE};
use super::names::is_valid_name;
use super::OllamaError;
use crate::modelfile::Modelfile;

/// What to register.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// The GGUF file.
    pub gguf: PathBuf,
    /// Its SHA-256 (lower-case hex), computed when it was written.
    pub sha256: String,
    /// Full name, `model:tag`.
    pub name: String,
    /// `TEMPLATE` (Go template).
    pub template: Option<String>,
    /// `SYSTEM`.
    pub system: Option<String>,
    /// Context length (`num_ctx`).
    pub num_ctx: Option<u32>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Extra parameters (name, JSON value).
    pub parameters: Vec<(String, Value)>,
    /// `LICENSE`.
    pub license: Option<String>,
    /// Prompt of the smoke generation (empty: no smoke test, e.g. for a
    /// second tag of a file already tested).
    pub smoke_prompt: String,
}

/// What the server reported after registration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Registered {
    /// The model's name.
    pub name: String,
    /// Server version.
    pub server_version: String,
    /// `details.family` from `/api/show`.
    pub family: String,
    /// `details.quantization_level` from `/api/show`.
    pub quantization_level: String,
    /// Whether the blob had to be uploaded.
    pub uploaded: bool,
    /// Text of the smoke generation.
    pub smoke_output: String,
}

impl Registration {
    fn parameters_json(&self) -> Map<String, Value> {
        let mut p = Map::new();
        if let Some(n) = self.num_ctx {
            p.insert("num_ctx".into(), json!(n));
        }
        if !self.stop.is_empty() {
            p.insert("stop".into(), json!(self.stop));
        }
        for (k, v) in &self.parameters {
            p.insert(k.clone(), v.clone());
        }
        p
    }

    fn file_key(&self) -> String {
        self.gguf
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".gguf"))
            .unwrap_or_else(|| "model.gguf".into())
    }

    /// The legacy (< 0.5.5) Modelfile referencing the uploaded blob.
    fn legacy_modelfile(&self) -> Result<String, OllamaError> {
        let mut params = Vec::new();
        if let Some(n) = self.num_ctx {
            params.push(("num_ctx".to_owned(), n.to_string()));
        }
        for s in &self.stop {
            params.push(("stop".to_owned(), s.clone()));
        }
        for (k, v) in &self.parameters {
            params.push((
                k.clone(),
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string()),
            ));
        }
        Modelfile {
            from: format!("@sha256:{}", self.sha256),
            template: self.template.clone(),
            system: self.system.clone(),
            parameters: params,
            license: self.license.clone(),
        }
        .render()
        .map_err(|e| OllamaError::Protocol {
            endpoint: "/api/create".into(),
            reason: e.to_string(),
        })
    }
}

fn version_string(v: Version) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// One attempt at the whole registration.
pub async fn register(client: &Client, reg: &Registration) -> Result<Registered, OllamaError> {
    if !is_valid_name(&reg.name) {
        return Err(OllamaError::InvalidName(reg.name.clone()));
    }
    let version = client.version().await?;
    let mut uploaded = false;
    if !client.blob_exists(&reg.sha256).await? {
        match client.upload_blob(&reg.gguf, &reg.sha256).await {
            // A mismatch can come from bytes damaged in transit: upload
            // once more; a second mismatch means the file itself differs.
            Err(OllamaError::Api {
                status: 400,
                message,
                ..
            }) if message.contains("digest mismatch") => {
                client.upload_blob(&reg.gguf, &reg.sha256).await?;
            }
            other => other?,
        }
        uploaded = true;
    }
    let body = if version >= JSON_CREATE {
        let mut b = json!({
            "model": reg.name,
            "files": { reg.file_key(): format!("sha256:{}", reg.sha256) },
            "parameters": reg.parameters_json(),
            "stream": true,
        });
        if let Some(t) = &reg.template {
            b["template"] = json!(t);
        }
        if let Some(s) = &reg.system {
            b["system"] = json!(s);
        }
        if let Some(l) = &reg.license {
            b["license"] = json!(l);
        }
        b
    } else {
        json!({ "model": reg.name, "modelfile": reg.legacy_modelfile()?, "stream": true })
    };
    client.create(&body).await?;

    // Verify: listed, and shown with the details Ollama read from the file.
    let listed = client.tags().await?.iter().any(|m| {
        m.get("name").and_then(Value::as_str).is_some_and(|n| {
            n.eq_ignore_ascii_case(&reg.name)
                || n.eq_ignore_ascii_case(&format!("{}:latest", reg.name))
        })
    });
    if !listed {
        return Err(OllamaError::Protocol {
            endpoint: "/api/tags".into(),
            reason: format!("'{}' is not listed after create", reg.name),
        });
    }
    let show = client.show(&reg.name).await?;
    let detail = |k: &str| {
        show.get("details")
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let smoke_output = if reg.smoke_prompt.is_empty() {
        String::new()
    } else {
        client.generate(&reg.name, &reg.smoke_prompt, 8).await?
    };
    if smoke_output.is_empty() && !reg.smoke_prompt.is_empty() {
        return Err(OllamaError::Protocol {
            endpoint: "/api/generate".into(),
            reason: "the smoke generation returned no text".into(),
        });
    }
    Ok(Registered {
        name: reg.name.clone(),
        server_version: version_string(version),
        family: detail("family"),
        quantization_level: detail("quantization_level"),
        uploaded,
        smoke_output,
    })
}
