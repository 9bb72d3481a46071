//! Ollama model names (`types/model/name.go`): `model[:tag]`, with the
//! characters and lengths Ollama accepts, and a sanitizer that turns any
//! folder or file name into a valid model name.

/// True when `s` is a valid model part: 1–80 chars, first
/// `[A-Za-z0-9_]`, then `[A-Za-z0-9_.-]`. Tags follow the same rule.
pub fn is_valid_part(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    s.len() <= 80
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// True when `name` is `model` or `model:tag` with both parts valid.
pub fn is_valid_name(name: &str) -> bool {
    match name.rsplit_once(':') {
        Some((m, t)) => is_valid_part(m) && is_valid_part(t),
        None => is_valid_part(name),
    }
}

/// A valid model name from any text: lower-cased, runs of disallowed
/// characters become `-`, leading punctuation dropped, at most 80 chars;
/// `model` when nothing usable is left.
pub fn sanitize_model_name(raw: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    let trimmed = out
        .trim_start_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .trim_end_matches(['-', '.']);
    let mut name: String = trimmed.chars().take(80).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    if name.is_empty() {
        "model".to_owned()
    } else {
        name
    }
}

/// A valid tag from any text (same rules as model names).
pub fn sanitize_tag(raw: &str) -> String {
    sanitize_model_name(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollamas_examples() {
        for ok in ["gpt2-q4_k_m", "gpt2:Q4_K_M", "az-gpt:q4_k_m-iter400"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["my model", "-m", "m:", "", "m:t:x"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn sanitized_names_are_valid() {
        for raw in [
            "Az GPT (v2)",
            "  ..hidden",
            "nanogpt-az",
            "ŞəkilÇ",
            "",
            "a".repeat(200).as_str(),
        ] {
            let n = sanitize_model_name(raw);
            assert!(is_valid_part(&n), "{raw:?} -> {n:?}");
        }
        assert_eq!(sanitize_model_name("Az GPT (v2)"), "az-gpt-v2");
    }

    proptest::proptest! {
        #[test]
        fn any_text_sanitizes_to_a_valid_name(s in ".{0,120}") {
            proptest::prop_assert!(is_valid_part(&sanitize_model_name(&s)));
        }
    }
}
