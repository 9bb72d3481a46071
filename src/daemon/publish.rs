//! Registering a converted drop's outputs: each GGUF under its type tag
//! and its immutable version tag, the newest as `latest`, older versions
//! pruned when `keep` says so. Every step is idempotent by name, so a
//! registration interrupted by a crash is simply finished again.

use std::path::Path;

use serde_json::Value;

use super::state::OutputRecord;
use crate::modelfile;
use crate::ollama::{register, Client, OllamaError, Registered, Registration};

/// The registration request for one GGUF, from the Modelfile kvant wrote
/// beside it (so a restart registers exactly what the Modelfile says).
pub fn registration_from_modelfile(
    gguf: &Path,
    sha256: &str,
    name: &str,
    smoke: bool,
) -> Result<Registration, OllamaError> {
    let mf_path = gguf.with_extension("Modelfile");
    let text = std::fs::read_to_string(&mf_path).map_err(|e| OllamaError::Io {
        path: mf_path.clone(),
        source: e,
    })?;
    let cmds = modelfile::parse(&text).map_err(|e| OllamaError::Protocol {
        endpoint: mf_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut reg = Registration {
        gguf: gguf.to_owned(),
        sha256: sha256.to_owned(),
        name: name.to_owned(),
        smoke_prompt: if smoke { "Salam".into() } else { String::new() },
        ..Default::default()
    };
    for c in cmds {
        match c.name.as_str() {
            "template" => reg.template = Some(c.args),
            "system" => reg.system = Some(c.args),
            "license" => reg.license = Some(c.args),
            "parameter" => {
                let (k, v) = c.args.split_once(' ').unwrap_or((c.args.as_str(), ""));
                match k {
                    "num_ctx" => reg.num_ctx = v.parse().ok(),
                    "stop" => reg.stop.push(v.to_owned()),
                    _ => {
                        let val = v
                            .parse::<i64>()
                            .map(Value::from)
                            .or_else(|_| v.parse::<f64>().map(Value::from))
                            .or_else(|_| v.parse::<bool>().map(Value::from))
                            .unwrap_or_else(|_| Value::from(v));
                        reg.parameters.push((k.to_owned(), val));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(reg)
}

/// Registers every output (type tag + version tag), then points
/// `<model>:latest` at the first output. Returns what the server reported
/// for each file's first tag.
pub async fn publish(
    client: &Client,
    model: &str,
    outputs: &[OutputRecord],
) -> Result<Vec<Registered>, OllamaError> {
    let mut done = Vec::new();
    for out in outputs {
        for (i, tag) in out.tags.iter().enumerate() {
            let reg = registration_from_modelfile(&out.path, &out.sha256, tag, i == 0)?;
            let r = register(client, &reg).await?;
            if i == 0 {
                done.push(r);
            }
        }
    }
    if let Some(first) = outputs.first().and_then(|o| o.tags.first()) {
        client.copy(first, &format!("{model}:latest")).await?;
    }
    Ok(done)
}
