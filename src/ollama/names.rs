//! Ollama model names (types/model/name.go): validation of `[host/][namespace/]model[:tag]`
//! and turning arbitrary folder names into valid model names. Pure string code.

use super::error::OllamaError;

fn part_ok(s: &str, max: usize, extra: &[char]) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    s.len() <= max && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

/// Validate a name exactly as Ollama's `ParseName(..).IsValid()` would, so create never
/// fails with `invalid model name` after we already uploaded a blob.
pub fn validate_name(name: &str) -> Result<(), OllamaError> {
    let bad = |reason: &str| OllamaError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let (rest, tag) = match (name.rfind(':'), name.rfind('/')) {
        (Some(c), slash) if slash.is_none_or(|s| c > s) => (&name[..c], Some(&name[c + 1..])),
        _ => (name, None),
    };
    if let Some(tag) = tag {
        if !part_ok(tag, 80, &['.', '-']) {
            return Err(bad(
                "tag must be 1-80 chars of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
    }
    let mut parts: Vec<&str> = rest.rsplitn(3, '/').collect();
    parts.reverse();
    let (host, ns, model) = match parts.as_slice() {
        [m] => (None, None, *m),
        [n, m] => (None, Some(*n), *m),
        [h, n, m] => (Some(*h), Some(*n), *m),
        _ => return Err(bad("empty name")),
    };
    if !part_ok(model, 80, &['.', '-']) {
        return Err(bad(
            "model must be 1-80 chars of [A-Za-z0-9_.-], not starting with . or -",
        ));
    }
    if let Some(ns) = ns {
        if !part_ok(ns, 80, &['-']) {
            return Err(bad("namespace must be 1-80 chars of [A-Za-z0-9_-]"));
        }
    }
    if let Some(host) = host {
        let host = host.split_once("://").map_or(host, |(_, h)| h);
        if !part_ok(host, 350, &['.', ':', '-']) {
            return Err(bad("host must be 1-350 chars of [A-Za-z0-9_.:-]"));
        }
    }
    Ok(())
}

/// Make a valid, lower-case model name (without tag) from any folder name: disallowed
/// characters become `-`, runs collapse, leading `.`/`-` are dropped, length ≤ 80, and an
/// empty result becomes `model`.
pub fn sanitize_model_name(folder: &str) -> String {
    let mut out = String::new();
    for c in folder.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if c == '.' && out.is_empty() {
            continue;
        }
        out.push(c);
        if out.len() >= 80 {
            break;
        }
    }
    while out.ends_with('-') || out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("model");
    }
    out
}

/// `<model>:<tag>` with a sanitized tag (same rules as the model part), e.g.
/// `az-gpt:q4_k_m-iter2000`. Tags are immutable version names chosen by the caller.
pub fn tagged(model: &str, tag: &str) -> String {
    format!(
        "{}:{}",
        sanitize_model_name(model),
        sanitize_model_name(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_examples() {
        for ok in [
            "gpt2-q4_k_m",
            "gpt2:Q4_K_M",
            "me/gpt2:v1.0",
            "localhost:5000/me/m:t",
            "az-gpt:q4_k_m-iter2000",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "my model", "-m", "m:t:x", "ns.x/m", "m:", "", "/model", "ns//m", "a/b/c/d",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sanitize_examples() {
        assert_eq!(sanitize_model_name("My Model (v2)"), "my-model-v2");
        assert_eq!(sanitize_model_name("..."), "model");
        assert_eq!(sanitize_model_name("--Az_GPT.x--"), "az_gpt.x");
        assert_eq!(
            tagged("az gpt", "Q4_K_M-iter2000"),
            "az-gpt:q4_k_m-iter2000"
        );
    }

    proptest::proptest! {
        #[test]
        fn sanitized_is_valid(s in ".{0,200}") {
            let n = sanitize_model_name(&s);
            proptest::prop_assert!(validate_name(&n).is_ok(), "{:?} -> {:?}", s, n);
            let tagged_name = format!("{}:latest", n);
            proptest::prop_assert!(validate_name(&tagged_name).is_ok());
        }
    }
}
