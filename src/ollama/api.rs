//! Serde types for the subset of Ollama's REST API that registration uses. Unknown fields
//! are ignored, missing optional fields default, so newer servers stay compatible.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /api/create` body for servers ≥ 0.5.5 (JSON form with uploaded `files`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateRequest {
    /// Target model name.
    pub model: String,
    /// File name → `sha256:<hex>` of already uploaded blobs.
    pub files: BTreeMap<String, String>,
    /// Go template text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// System prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Parameters stored verbatim by the server (e.g. `num_ctx`, `stop`).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// License text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// Legacy (< 0.5.5) create body: the Modelfile text references blobs as `@sha256:<hex>`.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyCreateRequest {
    /// Target model name.
    pub model: String,
    /// Deprecated alias that old servers read.
    pub name: String,
    /// Modelfile text.
    pub modelfile: String,
    /// Always true: we read the NDJSON stream.
    pub stream: bool,
}

/// `{"error":"..."}` body of failed requests.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    /// Ollama's message.
    pub error: String,
}

/// `/api/version` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionResponse {
    /// Version string, e.g. `0.12.6`.
    pub version: String,
}

/// Model details shared by tags and show.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ModelDetails {
    /// `gguf`.
    #[serde(default)]
    pub format: String,
    /// `general.architecture`, e.g. `gpt2`.
    #[serde(default)]
    pub family: String,
    /// Human parameter count.
    #[serde(default)]
    pub parameter_size: String,
    /// File type name, e.g. `Q4_K_M` or `F16`.
    #[serde(default)]
    pub quantization_level: String,
}

/// One `/api/tags` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct TagModel {
    /// Display name, e.g. `gpt2:latest`.
    pub name: String,
    /// Total size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Hex sha256 of the manifest.
    #[serde(default)]
    pub digest: String,
    /// Details from the config blob.
    #[serde(default)]
    pub details: ModelDetails,
}

/// `/api/tags` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TagsResponse {
    /// Local models.
    #[serde(default)]
    pub models: Vec<TagModel>,
}

/// `/api/show` answer (subset).
#[derive(Debug, Clone, Deserialize)]
pub struct ShowResponse {
    /// Modelfile as the server renders it.
    #[serde(default)]
    pub modelfile: String,
    /// Parameters text.
    #[serde(default)]
    pub parameters: String,
    /// Template text.
    #[serde(default)]
    pub template: String,
    /// Details.
    #[serde(default)]
    pub details: ModelDetails,
}

/// `/api/generate` non-streaming answer (subset).
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateResponse {
    /// Generated text.
    #[serde(default)]
    pub response: String,
    /// Why generation stopped.
    #[serde(default)]
    pub done_reason: Option<String>,
}
