//! The Ollama hosts of the configuration: `ollama` is one URL or a list,
//! each parsed as `OLLAMA_HOST` is, and `[hosts."<url>"]` tables add
//! connection settings per host, with secrets kept out of the file:
//!
//! ```toml
//! ollama = ["http://gpu1:11434", "https://box.example/ollama"]
//! ca_file = "/etc/kvant/ca.pem"            # extra CA for every host
//! [hosts."https://box.example/ollama"]
//! headers_env = { Authorization = "KVANT_BOX_AUTH" }  # value from the environment
//! headers_file = "/etc/kvant/box.headers"  # `Name: value` lines
//! headers = { X-Team = "ml" }              # literal values
//! ca_file = "/etc/kvant/box-ca.pem"        # instead of the global one
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::DaemonError;
use crate::ollama::{parse_header_lines, parse_host, ClientOptions};

/// `ollama = "url"` or `ollama = ["url", …]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single URL.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The URLs, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A `[hosts."<url>"]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostFileSettings {
    /// Literal header values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header name → environment variable holding its value.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// A file of `Name: value` lines.
    pub headers_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for this host.
    pub ca_file: Option<PathBuf>,
}

/// One configured host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Base URL (the journal's key for the host).
    pub url: String,
    /// Headers and CA.
    pub options: ClientOptions,
}

fn options_for(
    s: Option<&HostFileSettings>,
    ca_file: Option<&PathBuf>,
) -> Result<ClientOptions, DaemonError> {
    let mut o = ClientOptions {
        headers: vec![],
        ca_file: s.and_then(|s| s.ca_file.clone()).or(ca_file.cloned()),
    };
    let Some(s) = s else {
        return Ok(o);
    };
    if let Some(p) = &s.headers_file {
        let text = std::fs::read_to_string(p)
            .map_err(|e| DaemonError::Config(format!("{}: {e}", p.display())))?;
        o.headers = parse_header_lines(&text)
            .map_err(|e| DaemonError::Config(format!("{}: {e}", p.display())))?;
    }
    for (name, var) in &s.headers_env {
        let value = std::env::var(var).map_err(|_| {
            DaemonError::Config(format!(
                "header {name}: the environment variable {var} is not set"
            ))
        })?;
        o.headers.push((name.clone(), value));
    }
    o.headers
        .extend(s.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(o)
}

/// The hosts: `urls` (flags, else the file's `ollama`, else
/// `OLLAMA_HOST`), each with its `[hosts]` settings. Duplicates are
/// dropped; a `[hosts]` table naming no configured host is an error (a
/// typo would silently send no token).
pub fn resolve_hosts(
    urls: Vec<String>,
    tables: &BTreeMap<String, HostFileSettings>,
    ca_file: Option<&PathBuf>,
) -> Result<Vec<HostConfig>, DaemonError> {
    let urls = if urls.is_empty() {
        vec![parse_host(std::env::var("OLLAMA_HOST").ok().as_deref()).base_url()]
    } else {
        urls.iter()
            .map(|u| parse_host(Some(u)).base_url())
            .collect()
    };
    let by_url: BTreeMap<String, &HostFileSettings> = tables
        .iter()
        .map(|(k, v)| (parse_host(Some(k)).base_url(), v))
        .collect();
    if let Some(stray) = by_url.keys().find(|k| !urls.contains(k)) {
        return Err(DaemonError::Config(format!(
            "[hosts.\"{stray}\"] names no host in `ollama`"
        )));
    }
    let mut out: Vec<HostConfig> = Vec::new();
    for url in urls {
        if out.iter().any(|h| h.url == url) {
            continue;
        }
        let options = options_for(by_url.get(&url).copied(), ca_file)?;
        out.push(HostConfig { url, options });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_like_ollama_host_and_deduplicated() {
        let hosts = resolve_hosts(
            vec![
                "gpu1".into(),
                "http://gpu1:11434".into(),
                "https://box/o".into(),
            ],
            &BTreeMap::new(),
            None,
        )
        .expect("hosts");
        let urls: Vec<&str> = hosts.iter().map(|h| h.url.as_str()).collect();
        assert_eq!(urls, ["http://gpu1:11434", "https://box:443/o"]);
    }

    #[test]
    fn headers_come_from_the_environment_and_strays_are_errors() {
        std::env::set_var("KVANT_TEST_HOSTS_TOKEN", "Bearer t0k");
        let mut tables = BTreeMap::new();
        tables.insert(
            "https://box/o".to_owned(),
            HostFileSettings {
                headers_env: [(
                    "Authorization".to_owned(),
                    "KVANT_TEST_HOSTS_TOKEN".to_owned(),
                )]
                .into(),
                ..Default::default()
            },
        );
        let hosts = resolve_hosts(vec!["https://box/o".into()], &tables, None).expect("hosts");
        assert_eq!(
            hosts[0].options.headers,
            vec![("Authorization".to_owned(), "Bearer t0k".to_owned())]
        );
        let e = resolve_hosts(vec!["gpu1".into()], &tables, None).expect_err("stray");
        assert!(e.to_string().contains("box"), "{e}");
    }
}
