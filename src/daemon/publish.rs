//! Registering a converted drop's outputs on one host: each GGUF under its
//! type tag (created once, so it is uploaded at most once), its immutable
//! version tag a copy of that, the newest as `latest`, older versions
//! pruned when `keep` says so. Every step is idempotent by name, so a
//! registration interrupted by a crash is simply finished again.

use std::path::Path;

use serde_json::Value;

use super::state::{HostModel, OutputRecord};
use crate::convert::{jinja_chat_template, ChatTemplate};
use crate::gguf::GgufFile;
use crate::modelfile;
use crate::ollama::{
    register, Client, OllamaError, Registered, Registration, SmokePolicy, TemplateMode,
};

/// How to publish on one host.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Go or native chat templates.
    pub template_mode: TemplateMode,
    /// What a failed chat smoke test does.
    pub smoke_policy: SmokePolicy,
    /// Old version tags to delete once this version is registered.
    pub prune: Vec<String>,
    /// This version has the lowest held-out perplexity so far:
    /// `<model>:best` points at it.
    pub best: bool,
}

/// What one host holds after publishing.
#[derive(Debug, Clone)]
pub struct Published {
    /// What the server reported for each output's first tag.
    pub registered: Vec<Registered>,
    /// Every name registered, as the host lists it.
    pub models: Vec<HostModel>,
    /// Prunes that failed (said, not fatal).
    pub prune_errors: Vec<String>,
}

/// The GGUF's Jinja chat template, and whether `template` is the user's
/// (anything but what kvant derives from that Jinja: its proven
/// translation, or `{{ .Prompt }}`).
fn template_origin(gguf: &Path, template: Option<&str>) -> (Option<String>, bool) {
    let Ok(f) = GgufFile::open(gguf) else {
        return (None, template.is_some());
    };
    let jinja = jinja_chat_template(&f.metadata);
    let derived = ChatTemplate::from_gguf(&f.metadata);
    let user = template.is_some_and(|t| t != derived.template());
    (jinja, user)
}

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
            "adapter" => reg.adapter = Some(super::adapter_job::adapter_layer(&mf_path, &c.args)?),
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
    (reg.jinja, reg.user_template) = template_origin(gguf, reg.template.as_deref());
    Ok(reg)
}

/// Registers every output on one host: the type tag is created, the
/// version tag copied from it; then `<model>:latest` (and `<model>:best`
/// when this version is the best measured) points at the first output and
/// `options.prune` is deleted.
pub async fn publish(
    client: &Client,
    model: &str,
    outputs: &[OutputRecord],
    options: &PublishOptions,
) -> Result<Published, OllamaError> {
    let mut registered = Vec::new();
    let mut names = Vec::new();
    for out in outputs {
        let Some((first, rest)) = out.tags.split_first() else {
            continue;
        };
        let mut reg = registration_from_modelfile(&out.path, &out.sha256, first, true)?;
        super::adapter_job::use_journaled_digest(&mut reg, outputs)?;
        reg.template_mode = options.template_mode;
        reg.smoke_policy = options.smoke_policy;
        registered.push(register(client, &reg).await?);
        names.push(first.clone());
        if let Some(base) = super::adapter_job::register_base_if_missing(client, &reg, out).await? {
            names.push(base.name.clone());
            registered.push(base);
        }
        for tag in rest {
            client.copy(first, tag).await?;
            names.push(tag.clone());
        }
    }
    if let Some(first) = outputs.first().and_then(|o| o.tags.first()) {
        let latest = format!("{model}:latest");
        client.copy(first, &latest).await?;
        names.push(latest);
        if options.best {
            let best = format!("{model}:best");
            client.copy(first, &best).await?;
            names.push(best);
        }
    }
    let mut prune_errors = Vec::new();
    for tag in &options.prune {
        if let Err(e) = client.delete(tag).await {
            prune_errors.push(format!("could not prune {tag}: {e}"));
        }
    }
    let listed = client.tags().await?;
    let models = names
        .into_iter()
        .map(|name| {
            let entry = listed.iter().find(|m| {
                m.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(&name))
            });
            let field = |k: &str| entry.and_then(|e| e.get(k)).cloned();
            HostModel {
                digest: field("digest")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                size: field("size").and_then(|v| v.as_u64()).unwrap_or(0),
                name,
            }
        })
        .collect();
    Ok(Published {
        registered,
        models,
        prune_errors,
    })
}
