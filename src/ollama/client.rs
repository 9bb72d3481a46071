//! Async HTTP client for one Ollama server. Every failure becomes an [`OllamaError`] naming
//! the endpoint; both of Ollama's error shapes (HTTP status + `{"error"}`, or a 200 NDJSON
//! stream ending in an `{"error"}` line) map to [`OllamaError::Api`] with Ollama's message.

use super::api::*;
use super::error::OllamaError;
use futures_util::StreamExt;
use std::path::Path;
use std::time::Duration;

/// Longest NDJSON line we accept; protects against a hostile or broken server.
const MAX_LINE: usize = 1 << 20;

/// Client bound to one server base URL.
#[derive(Debug, Clone)]
pub struct Client {
    base: url::Url,
    http: reqwest::Client,
    short_timeout: Duration,
    long_timeout: Duration,
}

fn transport(endpoint: &str) -> impl FnOnce(reqwest::Error) -> OllamaError + '_ {
    move |source| OllamaError::Transport {
        endpoint: endpoint.to_string(),
        source,
    }
}

impl Client {
    /// Client for `base` (see [`super::parse_host`]). Connect timeout is short (5 s) so a
    /// missing server is noticed fast; create/generate get long per-request timeouts.
    pub fn new(base: url::Url) -> Result<Self, OllamaError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(transport("(client)"))?;
        Ok(Client {
            base,
            http,
            short_timeout: Duration::from_secs(30),
            long_timeout: Duration::from_secs(1800),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    fn url(&self, endpoint: &str) -> Result<url::Url, OllamaError> {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        base.join(endpoint.trim_start_matches('/'))
            .map_err(|e| OllamaError::Protocol {
                endpoint: endpoint.to_string(),
                reason: e.to_string(),
            })
    }

    /// Turn a non-success response into `Api` with Ollama's `{"error"}` message (or the raw
    /// body text when it is not JSON).
    async fn check(
        endpoint: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, OllamaError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        Err(OllamaError::Api {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        endpoint: &str,
        resp: reqwest::Response,
    ) -> Result<T, OllamaError> {
        let resp = Self::check(endpoint, resp).await?;
        let bytes = resp.bytes().await.map_err(transport(endpoint))?;
        serde_json::from_slice(&bytes).map_err(|e| OllamaError::Protocol {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<String, OllamaError> {
        let ep = "/api/version";
        let resp = self
            .http
            .get(self.url(ep)?)
            .timeout(self.short_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Ok(Self::json::<VersionResponse>(ep, resp).await?.version)
    }

    /// `HEAD /api/blobs/<digest>`: true on 200, false on 404.
    pub async fn blob_exists(&self, digest: &str) -> Result<bool, OllamaError> {
        let ep = format!("/api/blobs/{digest}");
        let resp = self
            .http
            .head(self.url(&ep)?)
            .timeout(self.short_timeout)
            .send()
            .await
            .map_err(transport(&ep))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Self::check(&ep, resp).await.map(|_| false),
        }
    }

    /// `POST /api/blobs/<digest>` streaming the file from disk (never read whole into memory).
    pub async fn upload_blob(&self, path: &Path, digest: &str) -> Result<(), OllamaError> {
        let ep = format!("/api/blobs/{digest}");
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| OllamaError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let len = file
            .metadata()
            .await
            .map_err(|source| OllamaError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        let resp = self
            .http
            .post(self.url(&ep)?)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .timeout(self.long_timeout)
            .send()
            .await
            .map_err(transport(&ep))?;
        Self::check(&ep, resp).await.map(|_| ())
    }

    /// Read an NDJSON stream line by line until a final `success` status; an `{"error"}` line
    /// becomes `Api` with status 200 (or the status attached to the line by 0.5.5–0.12.5).
    async fn read_progress(
        endpoint: &str,
        resp: reqwest::Response,
    ) -> Result<Vec<String>, OllamaError> {
        let resp = Self::check(endpoint, resp).await?;
        let http_status = resp.status().as_u16();
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut statuses = Vec::new();
        let handle = |line: &[u8], statuses: &mut Vec<String>| -> Result<(), OllamaError> {
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            if line.is_empty() {
                return Ok(());
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| OllamaError::Protocol {
                    endpoint: endpoint.to_string(),
                    reason: format!("bad NDJSON line: {e}"),
                })?;
            if let Some(err) = v
                .get("error")
                .and_then(|e| e.as_str())
                .filter(|e| !e.is_empty())
            {
                let status = v
                    .get("status")
                    .and_then(|s| s.as_u64())
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(http_status);
                return Err(OllamaError::Api {
                    endpoint: endpoint.to_string(),
                    status,
                    message: err.to_string(),
                });
            }
            if let Some(s) = v.get("status").and_then(|s| s.as_str()) {
                statuses.push(s.to_string());
            }
            Ok(())
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport(endpoint))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                handle(&line, &mut statuses)?;
            }
            if buf.len() > MAX_LINE {
                return Err(OllamaError::Protocol {
                    endpoint: endpoint.to_string(),
                    reason: "NDJSON line too long".into(),
                });
            }
        }
        handle(&buf, &mut statuses)?;
        if statuses.last().map(String::as_str) != Some("success") {
            return Err(OllamaError::Protocol {
                endpoint: endpoint.to_string(),
                reason: format!(
                    "stream ended without success (last status {:?})",
                    statuses.last()
                ),
            });
        }
        Ok(statuses)
    }

    /// `POST /api/create` (JSON form, servers ≥ 0.5.5); returns the streamed statuses.
    pub async fn create(&self, req: &CreateRequest) -> Result<Vec<String>, OllamaError> {
        let ep = "/api/create";
        let mut body = serde_json::to_value(req).map_err(|e| OllamaError::Protocol {
            endpoint: ep.into(),
            reason: e.to_string(),
        })?;
        if let Some(o) = body.as_object_mut() {
            o.insert("stream".into(), serde_json::Value::Bool(true));
        }
        let resp = self
            .http
            .post(self.url(ep)?)
            .json(&body)
            .timeout(self.long_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Self::read_progress(ep, resp).await
    }

    /// `POST /api/create` legacy form (servers < 0.5.5) with Modelfile text.
    pub async fn create_legacy(
        &self,
        model: &str,
        modelfile: &str,
    ) -> Result<Vec<String>, OllamaError> {
        let ep = "/api/create";
        let req = LegacyCreateRequest {
            model: model.into(),
            name: model.into(),
            modelfile: modelfile.into(),
            stream: true,
        };
        let resp = self
            .http
            .post(self.url(ep)?)
            .json(&req)
            .timeout(self.long_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Self::read_progress(ep, resp).await
    }

    /// `GET /api/tags`.
    pub async fn tags(&self) -> Result<TagsResponse, OllamaError> {
        let ep = "/api/tags";
        let resp = self
            .http
            .get(self.url(ep)?)
            .timeout(self.short_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Self::json(ep, resp).await
    }

    /// `POST /api/show`.
    pub async fn show(&self, name: &str) -> Result<ShowResponse, OllamaError> {
        let ep = "/api/show";
        let resp = self
            .http
            .post(self.url(ep)?)
            .json(&serde_json::json!({ "model": name }))
            .timeout(self.short_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Self::json(ep, resp).await
    }

    /// `POST /api/copy` (overwrites an existing destination, as Ollama does).
    pub async fn copy(&self, source: &str, destination: &str) -> Result<(), OllamaError> {
        let ep = "/api/copy";
        let resp = self
            .http
            .post(self.url(ep)?)
            .json(&serde_json::json!({ "source": source, "destination": destination }))
            .timeout(self.short_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Self::check(ep, resp).await.map(|_| ())
    }

    /// `DELETE /api/delete`.
    pub async fn delete(&self, name: &str) -> Result<(), OllamaError> {
        let ep = "/api/delete";
        let resp = self
            .http
            .delete(self.url(ep)?)
            .json(&serde_json::json!({ "model": name }))
            .timeout(self.short_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Self::check(ep, resp).await.map(|_| ())
    }

    /// `POST /api/generate` with `stream:false`; returns the generated text.
    pub async fn generate(
        &self,
        name: &str,
        prompt: &str,
        num_predict: u32,
    ) -> Result<String, OllamaError> {
        let ep = "/api/generate";
        let body = serde_json::json!({
            "model": name, "prompt": prompt, "stream": false,
            "options": { "num_predict": num_predict, "temperature": 0 }
        });
        let resp = self
            .http
            .post(self.url(ep)?)
            .json(&body)
            .timeout(self.long_timeout)
            .send()
            .await
            .map_err(transport(ep))?;
        Ok(Self::json::<GenerateResponse>(ep, resp).await?.response)
    }
}

/// Parse `X.Y.Z[-suffix]` into numbers; unknown parts count as 0. `0.0.0` (source build) is
/// treated as newest by [`supports_files_create`].
pub fn parse_version(v: &str) -> (u64, u64, u64) {
    let core = v.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next().unwrap_or("");
    let mut it = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// True when the server takes the JSON `files` create form (≥ 0.5.5, or a dev build 0.0.0).
pub fn supports_files_create(version: &str) -> bool {
    let v = parse_version(version);
    v == (0, 0, 0) || v >= (0, 5, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gate() {
        assert!(!supports_files_create("0.5.4"));
        assert!(supports_files_create("0.5.5"));
        assert!(supports_files_create("0.12.6"));
        assert!(supports_files_create("0.33.0-rc2"));
        assert!(supports_files_create("0.0.0"));
        assert!(!supports_files_create("0.1.35"));
        assert!(supports_files_create("1.0"));
    }
}
