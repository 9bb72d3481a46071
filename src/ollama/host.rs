//! `OLLAMA_HOST`, parsed exactly as Ollama's `envconfig.Host()` does, so
//! kvant talks to the same server the `ollama` CLI would.
//!
//! The value is trimmed of spaces and quotes; no scheme means `http`
//! (a bare `ollama.com` means `https://ollama.com:443`); the default port
//! is 11434 without a scheme, 80 for `http://` and 443 for `https://`; an
//! invalid port falls back to the default; a path is kept.

/// A parsed Ollama address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaHost {
    /// `http` or `https` (as given).
    pub scheme: String,
    /// Host name or IP, without brackets. May be empty (`:1234`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path after the host, without the leading slash.
    pub path: String,
}

/// Go's `net.SplitHostPort`.
fn split_host_port(hp: &str) -> Option<(String, String)> {
    if let Some(rest) = hp.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = after.strip_prefix(':')?;
        if port.contains(':') {
            return None;
        }
        return Some((host.to_owned(), port.to_owned()));
    }
    let i = hp.rfind(':')?;
    let (host, port) = (&hp[..i], &hp[i + 1..]);
    if host.contains(':') || host.contains('[') || host.contains(']') || port.contains(']') {
        return None;
    }
    Some((host.to_owned(), port.to_owned()))
}

/// Parses an `OLLAMA_HOST` value (`None` or empty: the default
/// `http://127.0.0.1:11434`).
pub fn parse_host(value: Option<&str>) -> OllamaHost {
    let s = value
        .unwrap_or("")
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .trim();
    let (mut scheme, mut hostport, mut default_port) = ("http".to_owned(), s.to_owned(), 11434u16);
    match s.split_once("://") {
        None if s == "ollama.com" => {
            scheme = "https".into();
            hostport = "ollama.com:443".into();
        }
        None => {}
        Some((sc, rest)) => {
            scheme = sc.to_owned();
            hostport = rest.to_owned();
            default_port = match sc {
                "http" => 80,
                "https" => 443,
                _ => 11434,
            };
        }
    }
    let (hp, path) = match hostport.split_once('/') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.clone(), String::new()),
    };
    let (host, port) = match split_host_port(&hp) {
        Some(x) => x,
        None => {
            let trimmed = hp.trim_matches(|c| c == '[' || c == ']');
            let host = if let Ok(ip) = trimmed.parse::<std::net::IpAddr>() {
                ip.to_string()
            } else if !hp.is_empty() {
                hp.clone()
            } else {
                "127.0.0.1".to_owned()
            };
            (host, default_port.to_string())
        }
    };
    let port = port
        .parse::<i64>()
        .ok()
        .filter(|p| (0..=65535).contains(p))
        .map(|p| p as u16)
        .unwrap_or(default_port);
    OllamaHost {
        scheme,
        host,
        port,
        path,
    }
}

impl OllamaHost {
    /// The URL a client connects to: an unspecified or empty host
    /// (`0.0.0.0`, `::`, `:1234`) means this machine (Ollama's
    /// `ConnectableHost`).
    pub fn base_url(&self) -> String {
        let host = match self.host.as_str() {
            "" | "0.0.0.0" => "127.0.0.1".to_owned(),
            "::" => "[::1]".to_owned(),
            h if h.contains(':') => format!("[{h}]"),
            h => h.to_owned(),
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path.trim_end_matches('/'))
        };
        format!("{}://{host}:{}{path}", self.scheme, self.port)
    }

    /// `scheme://host:port[/path]` as Ollama prints it.
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path)
        };
        format!("{}://{host}:{}{path}", self.scheme, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ollama's own table (envconfig/config_test.go TestHost).
    #[test]
    fn ollamas_test_table() {
        let cases = [
            ("", "http://127.0.0.1:11434"),
            ("1.2.3.4", "http://1.2.3.4:11434"),
            (":1234", "http://:1234"),
            ("1.2.3.4:1234", "http://1.2.3.4:1234"),
            ("example.com", "http://example.com:11434"),
            ("example.com:1234", "http://example.com:1234"),
            ("0.0.0.0", "http://0.0.0.0:11434"),
            ("0.0.0.0:1234", "http://0.0.0.0:1234"),
            ("::", "http://[::]:11434"),
            ("[::]", "http://[::]:11434"),
            ("[::]:1234", "http://[::]:1234"),
            ("::1", "http://[::1]:11434"),
            ("[::1]", "http://[::1]:11434"),
            ("[::1]:1234", "http://[::1]:1234"),
            ("http://example.com", "http://example.com:80"),
            ("https://example.com", "https://example.com:443"),
            (
                "https://example.com/ollama",
                "https://example.com:443/ollama",
            ),
            ("ollama.com", "https://ollama.com:443"),
            ("  \"1.2.3.4:1234\" ", "http://1.2.3.4:1234"),
            ("'example.com'", "http://example.com:11434"),
            ("example.com:99999", "http://example.com:11434"),
            ("example.com:abc", "http://example.com:11434"),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_host(Some(input)).display(),
                want,
                "OLLAMA_HOST={input:?}"
            );
        }
    }

    #[test]
    fn unspecified_hosts_connect_to_loopback() {
        assert_eq!(
            parse_host(Some("0.0.0.0:1234")).base_url(),
            "http://127.0.0.1:1234"
        );
        assert_eq!(
            parse_host(Some(":1234")).base_url(),
            "http://127.0.0.1:1234"
        );
        assert_eq!(parse_host(None).base_url(), "http://127.0.0.1:11434");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,40}") {
            let h = parse_host(Some(&s));
            let _ = h.base_url();
        }
    }
}
