//! One call per Ollama endpoint kvant uses, over reqwest. Each call is a
//! single attempt; retrying is the caller's decision
//! ([`OllamaError::is_retryable`], [`super::retry::Backoff`]).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, LOCATION};
use reqwest::Method;
use serde_json::{json, Value};
use url::Url;

use super::connection::ClientOptions;
use super::proxy::{without_credentials, ProxyRules};
use super::redirect::{next_hop, same_origin, Hop, MAX_REDIRECTS};
use super::OllamaError;

/// A client for one Ollama server. Proxies come from the environment
/// ([`ProxyRules`]); redirects follow [`super::redirect`]'s rules.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    /// The configured base URL, whose origin alone gets `headers`.
    origin: Option<Url>,
    /// The host's extra headers (values marked sensitive).
    headers: HeaderMap,
    http: reqwest::Client,
}

/// What a request carries; re-sendable, since a 307/308 sends it again.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Empty,
    Json(&'a Value),
    /// A file streamed from disk (opened again for each hop).
    File(&'a Path),
}

/// `req` with `payload` as its body (a file is opened afresh, so each hop
/// streams it from the start).
async fn attach(
    req: reqwest::RequestBuilder,
    payload: Payload<'_>,
) -> Result<reqwest::RequestBuilder, OllamaError> {
    Ok(match payload {
        Payload::Empty => req,
        Payload::Json(v) => req.json(v),
        Payload::File(path) => {
            let io = |e| OllamaError::Io {
                path: path.to_owned(),
                source: e,
            };
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            let len = file.metadata().await.map_err(io)?.len();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
            req.header(CONTENT_LENGTH, len)
                .body(reqwest::Body::wrap_stream(stream))
        }
    })
}

/// Ollama's version as (major, minor, patch).
pub type Version = (u32, u32, u32);

/// The first version with the JSON `files` create request.
pub const JSON_CREATE: Version = (0, 5, 5);

fn parse_version(s: &str) -> Option<Version> {
    let core = s.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        it.next()??,
        it.next().flatten().unwrap_or(0),
        it.next().flatten().unwrap_or(0),
    ))
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:11434`).
    pub fn new(base: &str) -> Client {
        Self::with_options(base, &ClientOptions::default()).unwrap_or_else(|_| Client {
            base: base.trim_end_matches('/').to_owned(),
            origin: Url::parse(base).ok(),
            headers: HeaderMap::new(),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        })
    }

    /// A client for `base` sending `options`' headers and trusting its CA
    /// file besides the system's roots (see [`ClientOptions`]).
    pub fn with_options(base: &str, options: &ClientOptions) -> Result<Client, OllamaError> {
        let base = base.trim_end_matches('/');
        let setup = |reason: String| OllamaError::Setup {
            reason: format!("{base}: {reason}"),
        };
        let origin = Url::parse(base).map_err(|e| setup(format!("not a URL: {e}")))?;
        let rules = ProxyRules::from_env().map_err(setup)?;
        if let Some(p) = rules.proxy_for(&origin) {
            tracing::debug!(host = %base, "through the proxy {}", without_credentials(&p));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        builder = if rules.is_empty() {
            builder.no_proxy()
        } else {
            builder.proxy(reqwest::Proxy::custom(move |u| rules.proxy_for(u)))
        };
        for cert in options.certificates()? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            base: base.to_owned(),
            origin: Some(origin),
            headers: options.header_map()?,
            http,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn connect_err(&self, endpoint: &str, e: reqwest::Error) -> OllamaError {
        // A server that accepts and never answers (or answers a byte a
        // minute) ends in a timeout: say so, `kvant status` shows it.
        let mut reason = if e.is_timeout() {
            format!("Ollama not answering ({e})")
        } else {
            format!("{e}")
        };
        // reqwest's own line only says the request failed; the causes say
        // why (refused, DNS, certificate, a proxy refusing the tunnel).
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !reason.contains(&text) {
                reason = format!("{reason}: {text}");
            }
            cause = c.source();
        }
        OllamaError::Connect {
            endpoint: endpoint.to_owned(),
            url: self.base.clone(),
            reason,
        }
    }

    /// One request, following redirects as [`super::redirect`] says; the
    /// host's headers go only to its own origin.
    async fn send(
        &self,
        method: Method,
        endpoint: &str,
        payload: Payload<'_>,
        timeout: Duration,
    ) -> Result<reqwest::Response, OllamaError> {
        let mut url = Url::parse(&self.url(endpoint)).map_err(|e| OllamaError::Setup {
            reason: format!("{}: not a URL: {e}", self.base),
        })?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .timeout(timeout);
            if self.origin.as_ref().is_some_and(|o| same_origin(o, &url)) {
                req = req.headers(self.headers.clone());
            }
            req = attach(req, payload).await?;
            let resp = req
                .send()
                .await
                .map_err(|e| self.connect_err(endpoint, e))?;
            let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            match next_hop(&method, &url, resp.status(), location) {
                None => return Ok(resp),
                Some(Hop::Follow(next)) => {
                    tracing::debug!(host = %self.base, "{} redirected to {next}", url.path());
                    url = next;
                }
                Some(Hop::Refuse(reason)) => {
                    return Err(OllamaError::Redirect {
                        endpoint: endpoint.to_owned(),
                        reason,
                    })
                }
            }
        }
        Err(OllamaError::Redirect {
            endpoint: endpoint.to_owned(),
            reason: format!("{}: more than {MAX_REDIRECTS} redirects", self.base),
        })
    }

    /// Turns a non-success response into Ollama's error.
    async fn check(
        &self,
        endpoint: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, OllamaError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        Err(OllamaError::Api {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            message,
        })
    }

    async fn post_json(
        &self,
        endpoint: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, OllamaError> {
        let resp = self
            .send(Method::POST, endpoint, Payload::Json(body), timeout)
            .await?;
        self.check(endpoint, resp).await
    }

    /// `POST endpoint` (a model run: long timeout), decoded as JSON.
    async fn run_json(&self, endpoint: &str, body: &Value) -> Result<Value, OllamaError> {
        self.post_json(endpoint, body, Duration::from_secs(600))
            .await?
            .json()
            .await
            .map_err(|e| self.connect_err(endpoint, e))
    }

    /// `GET endpoint`, decoded as JSON (Ollama's error on failure).
    async fn get_json(&self, endpoint: &str, timeout: Duration) -> Result<Value, OllamaError> {
        let resp = self
            .send(Method::GET, endpoint, Payload::Empty, timeout)
            .await?;
        self.check(endpoint, resp)
            .await?
            .json()
            .await
            .map_err(|e| self.connect_err(endpoint, e))
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<Version, OllamaError> {
        let ep = "/api/version";
        let v = self.get_json(ep, Duration::from_secs(10)).await?;
        v.get("version")
            .and_then(Value::as_str)
            .and_then(parse_version)
            .ok_or_else(|| OllamaError::Protocol {
                endpoint: ep.into(),
                reason: format!("unexpected answer {v}"),
            })
    }

    /// `HEAD /api/blobs/sha256:<hex>`: does the server have the blob?
    pub async fn blob_exists(&self, sha256_hex: &str) -> Result<bool, OllamaError> {
        let ep = format!("/api/blobs/sha256:{sha256_hex}");
        let resp = self
            .send(Method::HEAD, &ep, Payload::Empty, Duration::from_secs(30))
            .await?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => self.check(&ep, resp).await.map(|_| false),
        }
    }

    /// `POST /api/blobs/sha256:<hex>` with the file streamed from disk
    /// (never read whole into memory).
    pub async fn upload_blob(&self, path: &Path, sha256_hex: &str) -> Result<(), OllamaError> {
        let ep = format!("/api/blobs/sha256:{sha256_hex}");
        let io = |e| OllamaError::Io {
            path: path.to_owned(),
            source: e,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        // Ten minutes plus a second per MiB: slow links pass, a server
        // that stopped reading does not hold the registration for ever.
        let timeout = Duration::from_secs(600 + len / (1 << 20));
        let resp = self
            .send(Method::POST, &ep, Payload::File(path), timeout)
            .await?;
        self.check(&ep, resp).await.map(|_| ())
    }

    /// `POST /api/create`, reading the NDJSON stream to its final
    /// `success`. Errors in either shape (an HTTP error status, or a 200
    /// stream ending in an `{"error"}` line) carry Ollama's message.
    pub async fn create(&self, body: &Value) -> Result<Vec<String>, OllamaError> {
        let ep = "/api/create";
        let resp = self.post_json(ep, body, Duration::from_secs(3600)).await?;
        let mut statuses = Vec::new();
        let mut buf = Vec::new();
        let mut stream = resp.bytes_stream();
        let handle = |line: &[u8], statuses: &mut Vec<String>| -> Result<(), OllamaError> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let v: Value = serde_json::from_slice(line).map_err(|e| OllamaError::Protocol {
                endpoint: ep.into(),
                reason: format!("bad NDJSON line: {e}"),
            })?;
            if let Some(err) = v.get("error").and_then(Value::as_str) {
                let status = v.get("status").and_then(Value::as_u64).unwrap_or(200) as u16;
                return Err(OllamaError::Api {
                    endpoint: ep.into(),
                    status,
                    message: err.to_owned(),
                });
            }
            if let Some(s) = v.get("status").and_then(Value::as_str) {
                statuses.push(s.to_owned());
            }
            Ok(())
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.connect_err(ep, e))?;
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                handle(&line, &mut statuses)?;
            }
        }
        handle(&buf, &mut statuses)?;
        if statuses.last().map(String::as_str) != Some("success") {
            return Err(OllamaError::Protocol {
                endpoint: ep.into(),
                reason: format!(
                    "the stream ended without success (last status: {:?})",
                    statuses.last()
                ),
            });
        }
        Ok(statuses)
    }

    /// `GET /api/tags`: the models the server lists.
    pub async fn tags(&self) -> Result<Vec<Value>, OllamaError> {
        let v = self.get_json("/api/tags", Duration::from_secs(30)).await?;
        Ok(v.get("models")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// `POST /api/show`.
    pub async fn show(&self, name: &str) -> Result<Value, OllamaError> {
        let ep = "/api/show";
        self.post_json(ep, &json!({ "model": name }), Duration::from_secs(60))
            .await?
            .json()
            .await
            .map_err(|e| self.connect_err(ep, e))
    }

    /// `POST /api/copy` (overwrites the destination).
    pub async fn copy(&self, source: &str, destination: &str) -> Result<(), OllamaError> {
        self.post_json(
            "/api/copy",
            &json!({ "source": source, "destination": destination }),
            Duration::from_secs(60),
        )
        .await
        .map(|_| ())
    }

    /// `DELETE /api/delete`; a model that is already gone is success.
    pub async fn delete(&self, name: &str) -> Result<(), OllamaError> {
        let ep = "/api/delete";
        let body = json!({ "model": name });
        let resp = self
            .send(
                Method::DELETE,
                ep,
                Payload::Json(&body),
                Duration::from_secs(60),
            )
            .await?;
        if resp.status().as_u16() == 404 {
            return Ok(());
        }
        self.check(ep, resp).await.map(|_| ())
    }

    /// `POST /api/generate` (not streamed): the generated text.
    pub async fn generate(
        &self,
        name: &str,
        prompt: &str,
        num_predict: u32,
    ) -> Result<String, OllamaError> {
        let ep = "/api/generate";
        let v = self
            .run_json(
                ep,
                &json!({
                    "model": name,
                    "prompt": prompt,
                    "stream": false,
                    "options": { "num_predict": num_predict, "seed": 1, "temperature": 0.7 },
                }),
            )
            .await?;
        v.get("response")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| OllamaError::Protocol {
                endpoint: ep.into(),
                reason: format!("no response text in {v}"),
            })
    }
}

impl Client {
    /// `POST /api/chat` (not streamed) with one user turn: the answer's
    /// text and `done_reason`.
    pub async fn chat(
        &self,
        name: &str,
        prompt: &str,
        num_predict: u32,
    ) -> Result<(String, String), OllamaError> {
        let ep = "/api/chat";
        let v = self
            .run_json(
                ep,
                &json!({
                    "model": name,
                    "messages": [{ "role": "user", "content": prompt }],
                    "stream": false,
                    "options": { "num_predict": num_predict, "seed": 1, "temperature": 0.7 },
                }),
            )
            .await?;
        let text = v
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| OllamaError::Protocol {
                endpoint: ep.into(),
                reason: format!("no message in {v}"),
            })?;
        let reason = v.get("done_reason").and_then(Value::as_str).unwrap_or("");
        Ok((text.to_owned(), reason.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(parse_version("0.5.4"), Some((0, 5, 4)));
        assert_eq!(parse_version("v0.12.6-rc1"), Some((0, 12, 6)));
        assert!(parse_version("0.5.4").unwrap() < JSON_CREATE);
        assert!(parse_version("0.12.6").unwrap() >= JSON_CREATE);
    }
}
