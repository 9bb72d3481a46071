//! Which proxy a request to Ollama goes through, read from the
//! environment by the rules of Go's `net/http` (`ProxyFromEnvironment`,
//! golang.org/x/net/http/httpproxy) — the rules the `ollama` CLI itself
//! follows, so kvant reaches a server the way `ollama list` does:
//!
//! - `HTTPS_PROXY` for https hosts, `HTTP_PROXY` for http hosts (the
//!   upper-case name wins over the lower-case one; an empty value is
//!   unset). Beyond Go, `ALL_PROXY`/`all_proxy` (curl's) is used when the
//!   scheme's own variable is unset.
//! - A value without a scheme is `http://`; `user:pass@` in it is sent as
//!   `Proxy-Authorization: Basic` (on the CONNECT for https hosts) and
//!   never logged. Only http and https proxies are supported.
//! - `localhost` and loopback addresses (127.0.0.0/8, ::1) are never
//!   proxied: a local Ollama stays reachable with a corporate proxy set.
//! - `NO_PROXY`/`no_proxy`: a comma list; `*` turns proxying off; an IP
//!   (optionally `:port`) or CIDR (`10.0.0.0/8`) matches addresses; a name
//!   matches itself and its subdomains (`example.com` matches
//!   `gpu.example.com`), a leading `.` or `*.` only subdomains; a name or IP
//!   with `:port` matches that port only.
//! - Under CGI (`REQUEST_METHOD` set) `HTTP_PROXY` is ignored, since a
//!   client's `Proxy:` header would arrive as it (httpoxy).
//!
//! Host names are matched as written, never resolved.

use std::net::IpAddr;

use url::{Host, Url};

/// The proxy settings of the environment.
#[derive(Clone, Default)]
pub struct ProxyRules {
    http: Option<Url>,
    https: Option<Url>,
    exempt: Vec<Exempt>,
    /// `NO_PROXY=*`.
    none: bool,
}

/// One `NO_PROXY` entry.
#[derive(Clone, Debug, PartialEq)]
enum Exempt {
    /// `10.0.0.0/8`: the first `bits` bits of the address.
    Network { base: IpAddr, bits: u32 },
    /// `1.2.3.4` or `1.2.3.4:80`.
    Ip { ip: IpAddr, port: Option<u16> },
    /// `example.com` (itself too) or `.example.com` (subdomains only);
    /// `suffix` starts with a dot.
    Domain {
        suffix: String,
        itself: bool,
        port: Option<u16>,
    },
}

impl std::fmt::Debug for ProxyRules {
    /// The proxies without their credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRules")
            .field("http", &self.http.as_ref().map(without_credentials))
            .field("https", &self.https.as_ref().map(without_credentials))
            .field("exempt", &self.exempt)
            .field("none", &self.none)
            .finish()
    }
}

/// `scheme://host:port` of a proxy, for messages (no user or password).
pub fn without_credentials(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// A proxy variable's value as a URL; the error names the variable, never
/// the value (it may hold a password).
fn parse_proxy(var: &str, value: &str) -> Result<Url, String> {
    let url = match Url::parse(value) {
        Ok(u) if u.has_host() => u,
        _ => Url::parse(&format!("http://{value}"))
            .map_err(|e| format!("{var} is not a proxy URL: {e}"))?,
    };
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "{var}: {other} proxies are not supported (use an http or https proxy)"
        )),
    }
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse().ok()
}

/// One `NO_PROXY` entry, lower-cased and trimmed; `None` when malformed
/// (ignored, as Go does).
fn parse_exempt(entry: &str) -> Option<Exempt> {
    if let Some((addr, bits)) = entry.split_once('/') {
        let base: IpAddr = addr.parse().ok()?;
        let bits: u32 = bits.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        return (bits <= max).then_some(Exempt::Network { base, bits });
    }
    let (host, port) = split_port(entry);
    if host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Exempt::Ip { ip, port });
    }
    let host = host.strip_prefix('*').unwrap_or(host);
    let (suffix, itself) = match host.strip_prefix('.') {
        Some(_) => (host.to_owned(), false),
        None => (format!(".{host}"), true),
    };
    Some(Exempt::Domain {
        suffix,
        itself,
        port,
    })
}

/// `host:port`, `[v6]:port`, or a bare host (a bare IPv6 address has
/// colons but no port).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(parse_port));
        }
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, parse_port(port)),
        _ => (entry, None),
    }
}

/// The address bits of `ip` as one number, with its width.
fn bits_of(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

impl Exempt {
    fn matches(&self, host: &Host<&str>, port: u16) -> bool {
        let ip = match host {
            Host::Ipv4(a) => Some(IpAddr::V4(*a)),
            Host::Ipv6(a) => Some(IpAddr::V6(*a)),
            Host::Domain(_) => None,
        };
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match (self, ip) {
            (Exempt::Network { base, bits }, Some(ip)) => {
                let ((b, width), (a, w)) = (bits_of(*base), bits_of(ip));
                if width != w || *bits == 0 {
                    return width == w;
                }
                let shift = width - bits;
                (a >> shift) == (b >> shift)
            }
            (Exempt::Ip { ip: want, port: p }, Some(ip)) => *want == ip && port_ok(p),
            (
                Exempt::Domain {
                    suffix,
                    itself,
                    port: p,
                },
                _,
            ) => {
                let name = host.to_string().to_ascii_lowercase();
                let hit = name.ends_with(suffix.as_str()) || (*itself && name == suffix[1..]);
                hit && port_ok(p)
            }
            _ => false,
        }
    }
}

impl ProxyRules {
    /// The rules of this process's environment.
    pub fn from_env() -> Result<ProxyRules, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The rules `get` (an environment lookup) describes.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ProxyRules, String> {
        let any = |names: &[&str]| -> Option<(String, String)> {
            names.iter().find_map(|n| {
                get(n)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| ((*n).to_owned(), v.trim().to_owned()))
            })
        };
        let all = any(&["ALL_PROXY", "all_proxy"]);
        let cgi = get("REQUEST_METHOD").is_some_and(|v| !v.is_empty());
        let http = if cgi {
            None
        } else {
            any(&["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone())
        };
        let https = any(&["HTTPS_PROXY", "https_proxy"]).or(all);
        let parse = |v: Option<(String, String)>| v.map(|(n, v)| parse_proxy(&n, &v)).transpose();
        let mut rules = ProxyRules {
            http: parse(http)?,
            https: parse(https)?,
            ..ProxyRules::default()
        };
        let list = any(&["NO_PROXY", "no_proxy"]).map(|(_, v)| v);
        for entry in list.iter().flat_map(|l| l.split(',')) {
            let entry = entry.trim().to_ascii_lowercase();
            if entry == "*" {
                rules.none = true;
            } else if let Some(e) = parse_exempt(&entry) {
                rules.exempt.push(e);
            }
        }
        Ok(rules)
    }

    /// True when no request is ever proxied.
    pub fn is_empty(&self) -> bool {
        self.none || (self.http.is_none() && self.https.is_none())
    }

    /// The proxy for a request to `url`, `None` to connect directly.
    pub fn proxy_for(&self, url: &Url) -> Option<Url> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url.host()?;
        let port = url.port_or_known_default()?;
        let local = match &host {
            Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
            Host::Ipv4(a) => a.is_loopback(),
            Host::Ipv6(a) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        if self.none || local || self.exempt.iter().any(|e| e.matches(&host, port)) {
            return None;
        }
        Some(proxy.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rules(env: &[(&str, &str)]) -> ProxyRules {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyRules::from_lookup(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .unwrap()
    }

    fn via(r: &ProxyRules, url: &str) -> Option<String> {
        r.proxy_for(&Url::parse(url).unwrap())
            .map(|u| without_credentials(&u))
    }

    #[test]
    fn the_scheme_picks_the_variable_and_all_proxy_fills_in() {
        let r = rules(&[
            ("HTTP_PROXY", "plain:3128"),
            ("https_proxy", "http://tls:3129"),
        ]);
        assert_eq!(
            via(&r, "http://gpu1:11434").as_deref(),
            Some("http://plain:3128")
        );
        assert_eq!(
            via(&r, "https://box.example/ollama").as_deref(),
            Some("http://tls:3129")
        );
        let r = rules(&[
            ("HTTP_PROXY", "http://up:1"),
            ("http_proxy", "http://low:2"),
        ]);
        assert_eq!(via(&r, "http://gpu1").as_deref(), Some("http://up:1"));
        let r = rules(&[("HTTP_PROXY", ""), ("http_proxy", "http://low:2")]);
        assert_eq!(via(&r, "http://gpu1").as_deref(), Some("http://low:2"));
        let r = rules(&[
            ("ALL_PROXY", "http://all:8080"),
            ("HTTPS_PROXY", "http://s:1"),
        ]);
        assert_eq!(via(&r, "http://gpu1").as_deref(), Some("http://all:8080"));
        assert_eq!(via(&r, "https://gpu1").as_deref(), Some("http://s:1"));
        assert!(rules(&[]).is_empty());
        assert_eq!(via(&rules(&[]), "http://gpu1"), None);
    }

    #[test]
    fn loopback_is_never_proxied() {
        let r = rules(&[("HTTP_PROXY", "http://p:1"), ("HTTPS_PROXY", "http://p:1")]);
        for url in [
            "http://localhost:11434",
            "http://LOCALHOST",
            "http://127.0.0.1:11434",
            "http://127.0.0.2",
            "http://[::1]:11434",
            "http://[::ffff:127.0.0.1]:11434",
            "https://127.0.0.1",
        ] {
            assert_eq!(via(&r, url), None, "{url}");
        }
        for url in [
            "http://[::2]",
            "http://localhost.net",
            "http://local.localhost",
        ] {
            assert!(via(&r, url).is_some(), "{url}");
        }
    }

    /// The cases of Go's httpproxy tests, as kvant reads them.
    #[test]
    fn no_proxy_follows_gos_rules() {
        let r = rules(&[
            ("HTTP_PROXY", "http://p:1"),
            (
                "NO_PROXY",
                "foobar.com, .barbaz.net, *.wild.org, 192.168.1.1, 192.168.1.3:80, 10.0.0.0/8, [2001:db8::1]:11434, gpu.lan:8080",
            ),
        ]);
        let direct = [
            "http://foobar.com",
            "http://www.foobar.com",
            "http://FOOBAR.com:443",
            "http://x.barbaz.net",
            "http://a.wild.org",
            "http://192.168.1.1:11434",
            "http://192.168.1.3",
            "http://10.20.30.40:11434",
            "http://[2001:db8::1]:11434",
            "http://gpu.lan:8080",
        ];
        for url in direct {
            assert_eq!(via(&r, url), None, "{url}");
        }
        let proxied = [
            "http://foofoobar.com",
            "http://barbaz.net",
            "http://wild.org",
            "http://192.168.1.2",
            "http://192.168.1.3:8080",
            "http://11.0.0.1",
            "http://[2001:db8::1]:80",
            "http://gpu.lan:11434",
        ];
        for url in proxied {
            assert!(via(&r, url).is_some(), "{url}");
        }
        let star = rules(&[("HTTP_PROXY", "http://p:1"), ("no_proxy", " * ")]);
        assert!(star.is_empty());
        assert_eq!(via(&star, "http://anything.example"), None);
    }

    #[test]
    fn credentials_are_kept_for_the_proxy_and_never_shown() {
        let r = rules(&[("HTTPS_PROXY", "http://kv:pa55w0rd@proxy.lan:3128")]);
        let p = r
            .proxy_for(&Url::parse("https://box.example").unwrap())
            .unwrap();
        assert_eq!((p.username(), p.password()), ("kv", Some("pa55w0rd")));
        assert_eq!(without_credentials(&p), "http://proxy.lan:3128");
        assert!(!format!("{r:?}").contains("pa55w0rd"));
    }

    #[test]
    fn unsupported_proxies_are_named_without_their_value() {
        let e = ProxyRules::from_lookup(|k| {
            (k == "HTTPS_PROXY").then(|| "socks5://u:secret@h:1080".to_owned())
        })
        .unwrap_err();
        assert!(e.contains("HTTPS_PROXY") && e.contains("socks5"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn cgi_ignores_http_proxy() {
        let r = rules(&[("HTTP_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(via(&r, "http://gpu1"), None);
    }
}
