//! `OLLAMA_HOST` parsing, mirroring Ollama's `envconfig.Host()` so kvant talks to the same
//! server the `ollama` CLI would. Pure string handling; no environment access here.
//!
//! Deviation by necessity: an empty host (`:1234`) and the unspecified addresses are mapped to
//! loopback (Ollama's `ConnectableHost`), because a client cannot connect to "any".

use super::error::OllamaError;
use std::net::IpAddr;

/// Parse an `OLLAMA_HOST` value (None/empty → `http://127.0.0.1:11434`) into the URL a client
/// should connect to. Never panics; refuses only values no URL can represent.
pub fn parse_host(value: Option<&str>) -> Result<url::Url, OllamaError> {
    let raw = value.unwrap_or("");
    let s = raw.trim().trim_matches(|c| c == '"' || c == '\'').trim();
    let mut default_port = "11434";
    let (scheme, hostport) = match s.split_once("://") {
        None => {
            if s == "ollama.com" {
                default_port = "443";
                ("https", s)
            } else {
                ("http", s)
            }
        }
        Some(("http", rest)) => {
            default_port = "80";
            ("http", rest)
        }
        Some(("https", rest)) => {
            default_port = "443";
            ("https", rest)
        }
        Some((other, rest)) => (other, rest),
    };
    let (hostport, path) = match hostport.split_once('/') {
        Some((h, p)) => (h, p),
        None => (hostport, ""),
    };
    let (mut host, mut port) = match split_host_port(hostport) {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => {
            let trimmed = hostport.trim_matches(|c| c == '[' || c == ']');
            let host = if let Ok(ip) = trimmed.parse::<IpAddr>() {
                ip.to_string()
            } else if !hostport.is_empty() {
                hostport.to_string()
            } else {
                "127.0.0.1".to_string()
            };
            (host, default_port.to_string())
        }
    };
    match port.parse::<i64>() {
        Ok(n) if (0..=65535).contains(&n) => {}
        _ => port = default_port.to_string(),
    }
    // ConnectableHost: unspecified or empty host → loopback.
    if host.is_empty() || host == "0.0.0.0" {
        host = "127.0.0.1".to_string();
    } else if host == "::" {
        host = "::1".to_string();
    }
    let host_fmt = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let text = format!("{scheme}://{host_fmt}:{port}/{path}");
    url::Url::parse(&text).map_err(|e| OllamaError::InvalidHost {
        value: raw.to_string(),
        reason: e.to_string(),
    })
}

/// Go's `net.SplitHostPort` for the cases Ollama meets: `host:port`, `[v6]:port`, `:port`.
/// Returns None where Go returns an error (missing port, too many colons, ...).
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        if host.contains('[') || host.contains(']') || port.contains(':') {
            return None;
        }
        return Some((host, port));
    }
    let (host, port) = hostport.rsplit_once(':')?;
    if host.contains(':') || host.contains('[') || host.contains(']') {
        return None;
    }
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envconfig_table() {
        let cases: &[(Option<&str>, &str)] = &[
            (None, "http://127.0.0.1:11434/"),
            (Some(""), "http://127.0.0.1:11434/"),
            (Some("1.2.3.4"), "http://1.2.3.4:11434/"),
            (Some(":1234"), "http://127.0.0.1:1234/"),
            (Some("1.2.3.4:1234"), "http://1.2.3.4:1234/"),
            (Some("example.com"), "http://example.com:11434/"),
            (Some("example.com:1234"), "http://example.com:1234/"),
            (Some("0.0.0.0"), "http://127.0.0.1:11434/"),
            (Some("0.0.0.0:1234"), "http://127.0.0.1:1234/"),
            (Some("::1"), "http://[::1]:11434/"),
            (Some("[::1]"), "http://[::1]:11434/"),
            (Some("[::1]:1337"), "http://[::1]:1337/"),
            (Some("[::]:1337"), "http://[::1]:1337/"),
            (Some("http://1.2.3.4"), "http://1.2.3.4/"),
            (Some("http://1.2.3.4:4321"), "http://1.2.3.4:4321/"),
            (Some("https://1.2.3.4"), "https://1.2.3.4/"),
            (Some("https://1.2.3.4:4321"), "https://1.2.3.4:4321/"),
            (
                Some("https://example.com/ollama"),
                "https://example.com/ollama",
            ),
            (
                Some("example.com/ollama"),
                "http://example.com:11434/ollama",
            ),
            (
                Some("example.com:11434/ollama/"),
                "http://example.com:11434/ollama/",
            ),
            (Some("  \"1.2.3.4:5678\" "), "http://1.2.3.4:5678/"),
            (Some("'1.2.3.4'"), "http://1.2.3.4:11434/"),
            (Some("1.2.3.4:port"), "http://1.2.3.4:11434/"),
            (Some("1.2.3.4:99999"), "http://1.2.3.4:11434/"),
            (Some("1.2.3.4:-1"), "http://1.2.3.4:11434/"),
            (Some("ollama.com"), "https://ollama.com/"),
        ];
        for (input, want) in cases {
            let got = parse_host(*input).unwrap();
            assert_eq!(got.as_str(), *want, "input {input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = parse_host(Some(&s));
        }
    }
}
