//! What kvant does when a reverse proxy in front of Ollama answers with a
//! redirect (reqwest's own following is off; [`super::Client`] applies
//! this):
//!
//! - `GET`/`HEAD`: every redirect (301, 302, 303, 307, 308) is followed.
//! - `POST`/`DELETE` (creates, uploads, copies): 307 and 308 are followed
//!   with the same method and body (JSON is sent again, a blob upload
//!   streams the file again from the start); 301, 302 and 303 are refused
//!   with one line naming the host and the `Location`, since following them
//!   would turn the upload into a `GET`, silently dropping its body.
//! - At most [`MAX_REDIRECTS`] hops.
//! - The host's extra headers (`Authorization: Bearer …` and the like) go
//!   only to the configured host's origin (scheme, host and port); a
//!   redirect to another origin is followed without them.

use reqwest::{Method, StatusCode};
use url::Url;

/// Redirects followed for one request before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// The decision for one redirect answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Hop {
    /// Send the same request to this URL.
    Follow(Url),
    /// Refused: the reason, one line.
    Refuse(String),
}

/// What to do with a `status` answer to `method url` carrying `location`
/// (`None`: the answer is not a redirect to follow, hand it back).
pub(super) fn next_hop(
    method: &Method,
    url: &Url,
    status: StatusCode,
    location: Option<&str>,
) -> Option<Hop> {
    let code = status.as_u16();
    if !matches!(code, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let Some(location) = location else {
        return Some(Hop::Refuse(format!(
            "{} answered {code} without a Location",
            origin_text(url)
        )));
    };
    let target = match url.join(location) {
        Ok(t) if matches!(t.scheme(), "http" | "https") => t,
        _ => {
            return Some(Hop::Refuse(format!(
                "{} answered {code} to an unusable Location {location:?}",
                origin_text(url)
            )))
        }
    };
    let safe = *method == Method::GET || *method == Method::HEAD;
    if safe || matches!(code, 307 | 308) {
        return Some(Hop::Follow(target));
    }
    Some(Hop::Refuse(format!(
        "{} answered {code} redirecting {method} {} to {target}; kvant does not follow a {code} for a {method} (it would become a GET without its body): set the Ollama URL to the new address, or have the proxy answer 307/308",
        origin_text(url),
        url.path()
    )))
}

/// `scheme://host:port`.
fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// True when `a` and `b` share scheme, host and port.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hop(method: Method, code: u16, loc: &str) -> Option<Hop> {
        let url = Url::parse("http://box:80/ollama/api/create").unwrap();
        next_hop(
            &method,
            &url,
            StatusCode::from_u16(code).unwrap(),
            Some(loc),
        )
    }

    #[test]
    fn reads_follow_every_redirect_writes_only_307_and_308() {
        for code in [301, 302, 303, 307, 308] {
            assert_eq!(
                hop(Method::GET, code, "/x"),
                Some(Hop::Follow(Url::parse("http://box/x").unwrap()))
            );
        }
        for code in [307, 308] {
            assert_eq!(
                hop(Method::POST, code, "https://box/ollama/api/create"),
                Some(Hop::Follow(
                    Url::parse("https://box/ollama/api/create").unwrap()
                ))
            );
        }
        for code in [301, 302, 303] {
            let Some(Hop::Refuse(why)) = hop(Method::POST, code, "https://box/api/create") else {
                panic!("{code} on POST must be refused");
            };
            assert!(
                why.contains("http://box")
                    && why.contains("https://box/api/create")
                    && why.contains(&code.to_string()),
                "{why}"
            );
        }
        assert_eq!(hop(Method::POST, 200, "/x"), None);
        assert_eq!(hop(Method::GET, 304, "/x"), None);
        assert!(matches!(
            hop(Method::GET, 302, "ftp://box/x"),
            Some(Hop::Refuse(_))
        ));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("http://box/a"), &u("http://box:80/b")));
        assert!(!same_origin(&u("http://box/a"), &u("https://box/a")));
        assert!(!same_origin(&u("http://box/a"), &u("http://box:8080/a")));
        assert!(!same_origin(&u("http://box/a"), &u("http://other/a")));
    }
}
