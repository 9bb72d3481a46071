//! Registering a GGUF file as an Ollama model, one attempt of the whole
//! sequence: version → blob (HEAD, upload if missing) → create (with the
//! template the server's version calls for, [`choose_template`]) → verify
//! (`/api/tags`, `/api/show` and its capabilities) → a smoke test: a chat
//! model answers one user turn through `/api/chat` (what `ollama run`
//! uses) and must end it with `done_reason: "stop"` within
//! [`CHAT_SMOKE_TOKENS`]; a base model must return text from
//! `/api/generate`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::adapter::{self, AdapterLayer};
use super::client::{Client, Version, JSON_CREATE};
use super::names::is_valid_name;
use super::template_mode::{choose_template, TemplateMode, NATIVE_JINJA};
use super::OllamaError;
use crate::modelfile::Modelfile;

/// The longest chat answer the smoke test allows: a right template ends
/// its turn well before; a wrong one rambles until this cut.
pub const CHAT_SMOKE_TOKENS: u32 = 96;

/// Whether a failed chat smoke test stops the model from being published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmokePolicy {
    /// Report it as a warning; the model stays registered.
    #[default]
    Warn,
    /// The registration fails with the reason.
    Block,
}

impl std::str::FromStr for SmokePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "warn" => Ok(SmokePolicy::Warn),
            "block" => Ok(SmokePolicy::Block),
            _ => Err(format!("unknown smoke policy '{s}' (warn or block)")),
        }
    }
}

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
    /// The GGUF's Jinja `tokenizer.chat_template`, if it has one (a chat
    /// model).
    pub jinja: Option<String>,
    /// True when `template` is the user's own (it is always sent).
    pub user_template: bool,
    /// Go or native chat templates ([`choose_template`]).
    pub template_mode: TemplateMode,
    /// What a failed chat smoke test does.
    pub smoke_policy: SmokePolicy,
    /// A LoRA adapter applied on top of `gguf` (one adapter layer).
    pub adapter: Option<AdapterLayer>,
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
    /// The server's base URL.
    pub host: String,
    /// `native` (the GGUF's Jinja) or `go` (a Go TEMPLATE was sent).
    pub template_mode: String,
    /// `/api/show` capabilities (empty before Ollama 0.6.4).
    pub capabilities: Vec<String>,
    /// `/api/chat` or `/api/generate` (empty: no smoke test).
    pub smoke_endpoint: String,
    /// The chat answer's `done_reason`.
    pub done_reason: Option<String>,
    /// Problems worth a warning (a dropped capability, a rambling chat).
    pub warnings: Vec<String>,
    /// `/api/tags` digest (of the manifest) and size of the model.
    pub digest: String,
    /// Bytes the model's blobs take on the server.
    pub size: u64,
    /// Bytes of the uploaded blob Ollama ≥ 0.30 leaves unreferenced after
    /// rewriting it (pruned at its next restart).
    pub orphaned_upload_bytes: u64,
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
            adapter: self.adapter.as_ref().map(adapter::legacy_reference),
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

/// True when the template (or its absence) mentions tool calling.
fn mentions_tools(jinja: &str) -> bool {
    jinja.contains("tools") || jinja.contains("tool_call")
}

/// Uploads the blob unless the server has it; whether it was uploaded.
async fn ensure_blob(client: &Client, reg: &Registration) -> Result<bool, OllamaError> {
    let uploaded = ensure_file(client, &reg.gguf, &reg.sha256).await?;
    if let Some(layer) = &reg.adapter {
        ensure_file(client, &layer.path, &layer.sha256).await?;
    }
    Ok(uploaded)
}

/// Uploads one file unless the server has its blob; whether it was
/// uploaded.
async fn ensure_file(client: &Client, path: &Path, sha256: &str) -> Result<bool, OllamaError> {
    if client.blob_exists(sha256).await? {
        return Ok(false);
    }
    match client.upload_blob(path, sha256).await {
        // A mismatch can come from bytes damaged in transit: upload
        // once more; a second mismatch means the file itself differs.
        Err(OllamaError::Api {
            status: 400,
            message,
            ..
        }) if message.contains("digest mismatch") => {
            client.upload_blob(path, sha256).await?;
        }
        other => other?,
    }
    Ok(true)
}

fn create_body(
    reg: &Registration,
    version: Version,
    template: Option<&str>,
) -> Result<Value, OllamaError> {
    if version < JSON_CREATE {
        let legacy = Registration {
            template: template.map(str::to_owned),
            ..reg.clone()
        };
        return Ok(
            json!({ "model": reg.name, "modelfile": legacy.legacy_modelfile()?, "stream": true }),
        );
    }
    let mut b = json!({
        "model": reg.name,
        "files": { reg.file_key(): format!("sha256:{}", reg.sha256) },
        "parameters": reg.parameters_json(),
        "stream": true,
    });
    if let Some(t) = template {
        b["template"] = json!(t);
    }
    if let Some(s) = &reg.system {
        b["system"] = json!(s);
    }
    if let Some(l) = &reg.license {
        b["license"] = json!(l);
    }
    if let Some(layer) = &reg.adapter {
        adapter::add_to_json_create(&mut b, layer);
    }
    Ok(b)
}

/// The `/api/tags` entry for `name` (`name:latest` for a bare name).
pub async fn listed(client: &Client, name: &str) -> Result<Option<Value>, OllamaError> {
    Ok(client.tags().await?.into_iter().find(|m| {
        m.get("name").and_then(Value::as_str).is_some_and(|n| {
            n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(&format!("{name}:latest"))
        })
    }))
}

/// The smoke test: (endpoint, text, done_reason, warning). A chat model
/// that does not end its turn is a warning, or an error under
/// [`SmokePolicy::Block`].
async fn smoke(
    client: &Client,
    reg: &Registration,
    chat: bool,
) -> Result<(String, String, Option<String>, Option<String>), OllamaError> {
    if reg.smoke_prompt.is_empty() {
        return Ok((String::new(), String::new(), None, None));
    }
    if !chat {
        let text = client.generate(&reg.name, &reg.smoke_prompt, 8).await?;
        if text.is_empty() {
            return Err(OllamaError::Protocol {
                endpoint: "/api/generate".into(),
                reason: "the smoke generation returned no text".into(),
            });
        }
        return Ok(("/api/generate".into(), text, None, None));
    }
    let (text, done_reason) = client
        .chat(&reg.name, &reg.smoke_prompt, CHAT_SMOKE_TOKENS)
        .await?;
    let problem = (done_reason != "stop").then(|| {
        format!(
            "the chat answer did not end its turn within {CHAT_SMOKE_TOKENS} tokens \
             (done_reason \"{done_reason}\"): the chat template does not match the model"
        )
    });
    match (&problem, reg.smoke_policy) {
        (Some(p), SmokePolicy::Block) => Err(OllamaError::Smoke {
            name: reg.name.clone(),
            reason: p.clone(),
        }),
        _ => Ok(("/api/chat".into(), text, Some(done_reason), problem)),
    }
}

/// One attempt at the whole registration.
pub async fn register(client: &Client, reg: &Registration) -> Result<Registered, OllamaError> {
    if !is_valid_name(&reg.name) {
        return Err(OllamaError::InvalidName(reg.name.clone()));
    }
    let version = client.version().await?;
    if let Some(layer) = &reg.adapter {
        adapter::check_supported(client.base(), version, layer)?;
    }
    let uploaded = ensure_blob(client, reg).await?;
    let choice = choose_template(
        reg.template_mode,
        version,
        reg.template.as_deref(),
        reg.jinja.is_some(),
        reg.user_template,
    );
    client
        .create(&create_body(reg, version, choice.template.as_deref())?)
        .await?;

    // Verify: listed, and shown with the details Ollama read from the file.
    let Some(entry) = listed(client, &reg.name).await? else {
        return Err(OllamaError::Protocol {
            endpoint: "/api/tags".into(),
            reason: format!("'{}' is not listed after create", reg.name),
        });
    };
    let show = client.show(&reg.name).await?;
    if reg.adapter.is_some() {
        adapter::check_shown(&reg.name, &show)?;
    }
    let detail = |k: &str| {
        show.get("details")
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let capabilities: Vec<String> = show
        .get("capabilities")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut warnings: Vec<String> = choice.note.into_iter().collect();
    let tools = reg.jinja.as_deref().is_some_and(mentions_tools);
    if tools && !capabilities.iter().any(|c| c == "tools") {
        warnings.push(format!(
            "the model's chat template handles tools, but Ollama {} lists no 'tools' capability \
             for {} (registered with the {} template): tool calls are dropped",
            version_string(version),
            reg.name,
            choice.mode
        ));
    }
    let chat = reg.jinja.is_some()
        || (reg.user_template && reg.template.as_deref() != Some("{{ .Prompt }}"));
    let (smoke_endpoint, smoke_output, done_reason, problem) = smoke(client, reg, chat).await?;
    warnings.extend(problem);
    let size = entry.get("size").and_then(Value::as_u64).unwrap_or(0);
    // From 0.30 the server stores a rewritten copy; the uploaded blob
    // stays on its disk, unreferenced, until Ollama restarts.
    let orphaned = version >= NATIVE_JINJA && client.blob_exists(&reg.sha256).await?;
    let file_len = std::fs::metadata(&reg.gguf).map(|m| m.len()).unwrap_or(0);
    Ok(Registered {
        name: reg.name.clone(),
        server_version: version_string(version),
        family: detail("family"),
        quantization_level: detail("quantization_level"),
        uploaded,
        smoke_output,
        host: client.base().to_owned(),
        template_mode: choice.mode.to_owned(),
        capabilities,
        smoke_endpoint,
        done_reason,
        warnings,
        digest: entry
            .get("digest")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        size,
        orphaned_upload_bytes: if orphaned { file_len } else { 0 },
    })
}
