//! How kvant connects to one Ollama host beyond its URL: extra request
//! headers (an `Authorization: Bearer …` for an Ollama behind nginx or
//! Caddy) and an extra CA certificate for https.
//!
//! TLS is rustls with the system's root certificates (no OpenSSL); proxies
//! come from the environment as Go's `net/http` reads them
//! ([`super::ProxyRules`]); redirects follow [`super::redirect`], and these
//! headers are sent only to the host's own origin. Header values are marked
//! sensitive, so no `Debug` output or log line ever shows them.

use std::path::PathBuf;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::OllamaError;

/// Connection settings for one host.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Extra request headers, sent with every request (name, value).
    pub headers: Vec<(String, String)>,
    /// A PEM file of extra trusted CA certificates.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClientOptions {
    /// Names the headers, never their values (they hold secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClientOptions")
            .field("headers", &names)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn setup_err(reason: String) -> OllamaError {
    OllamaError::Setup { reason }
}

impl ClientOptions {
    /// The headers as reqwest's map, each value marked sensitive.
    pub(crate) fn header_map(&self) -> Result<HeaderMap, OllamaError> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| setup_err(format!("'{name}' is not a valid HTTP header name")))?;
            let mut v = HeaderValue::from_str(value.trim()).map_err(|_| {
                setup_err(format!("the value of header '{name}' is not valid in HTTP"))
            })?;
            v.set_sensitive(true);
            map.append(n, v);
        }
        Ok(map)
    }

    /// The extra CA certificates, if a file was given.
    pub(crate) fn certificates(&self) -> Result<Vec<reqwest::Certificate>, OllamaError> {
        let Some(path) = &self.ca_file else {
            return Ok(vec![]);
        };
        let pem = std::fs::read(path).map_err(|e| OllamaError::Io {
            path: path.clone(),
            source: e,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| setup_err(format!("{}: not PEM certificates: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(setup_err(format!(
                "{}: no certificate in the file",
                path.display()
            )));
        }
        Ok(certs)
    }
}

/// Reads `Name: value` lines (blank lines and `#` comments skipped), the
/// format of a `headers_file`.
pub fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {}: expected 'Name: value'", i + 1));
        };
        out.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let o = ClientOptions {
            headers: vec![("Authorization".into(), "Bearer s3cret".into())],
            ca_file: None,
        };
        assert!(!format!("{o:?}").contains("s3cret"));
        let map = o.header_map().expect("valid header");
        assert!(!format!("{map:?}").contains("s3cret"));
    }

    #[test]
    fn header_files_parse_and_bad_lines_are_named() {
        let h =
            parse_header_lines("# token\nAuthorization: Bearer a:b\n\nX-A: 1\n").expect("parses");
        assert_eq!(
            h,
            vec![
                ("Authorization".to_owned(), "Bearer a:b".to_owned()),
                ("X-A".to_owned(), "1".to_owned())
            ]
        );
        let e = parse_header_lines("Authorization Bearer x").expect_err("no colon");
        assert!(e.contains("line 1"), "{e}");
    }
}
