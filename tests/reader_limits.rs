//! Issue 11 item 1, reader by reader in the library: each hostile shape
//! gets an error naming the limit, never a stack overflow, a hang or an
//! allocation the size of a lie. Inputs the fuzzer (`scripts/fuzz.sh`)
//! found are kept here as plain regression tests, named after the target
//! that found them.

use kvant::modelfile;
use kvant::tokenizer::chat_template::gotemplate::GoTemplate;
use kvant::tokenizer::chat_template::{translate, Specials};

const DEPTH: usize = 100_000;

fn specials() -> Specials {
    Specials {
        bos: Some("<s>".into()),
        eos: Some("</s>".into()),
        add_bos_token: false,
    }
}

/// Every JSON file kvant reads (config.json, tokenizer.json,
/// tokenizer_config.json, index files) goes through `serde_json::from_str`
/// into a `Value`; kvant relies on serde_json's default recursion limit
/// (128) for those, so this pins that it is on.
#[test]
fn serde_json_refuses_deep_json_into_a_value() {
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let text = format!("{}1{}", open.repeat(DEPTH), close.repeat(DEPTH));
        let err = serde_json::from_str::<serde_json::Value>(&text).expect_err("too deep");
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
    let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
}

#[test]
fn go_templates_nested_100000_deep_are_refused() {
    for (open, close) in [
        ("{{ if .A }}", "{{ end }}"),
        ("{{ range .Messages }}", "{{ end }}"),
    ] {
        // Within the template size limit, far beyond the nesting limit.
        let depth = 5_000;
        let text = format!("{}x{}", open.repeat(depth), close.repeat(depth));
        let err = GoTemplate::parse(&text).expect_err("too deep");
        assert!(err.to_string().contains("nested too deeply"), "{err}");
    }
    // Parenthesised pipelines nest inside one action.
    let text = format!("{{{{ {}.A{} }}}}", "(".repeat(DEPTH), ")".repeat(DEPTH));
    assert!(GoTemplate::parse(&text).is_err());
}

#[test]
fn a_jinja_template_that_loops_forever_runs_out_of_fuel() {
    let t = "{% for m in messages %}{% for a in range(10000) %}{% for b in range(10000) %}{{ m.content }}{% endfor %}{% endfor %}{% endfor %}";
    let err = translate(t, &specials()).expect_err("no translation");
    assert!(err.to_string().contains("fuel"), "{err}");
}

#[test]
fn a_jinja_template_cannot_render_unbounded_text() {
    // Megabytes per message: below minijinja's 100 MB repeat cap, over
    // kvant's 4 MiB.
    let t = "{% for m in messages %}{{ m.content * 1000000 }}{% endfor %}";
    let err = translate(t, &specials()).expect_err("no translation");
    assert!(err.to_string().contains("rendered text exceeds"), "{err}");
}

#[test]
fn jinja_macros_recursing_forever_stop_at_the_recursion_limit() {
    let t = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let err = translate(t, &specials()).expect_err("no translation");
    assert!(err.to_string().contains("recursion"), "{err}");
}

/// Found by `kvant-fuzz chat-template`: a line of 65 535 characters made
/// minijinja's error span overflow its u16 column (a panic in a debug
/// build).
#[test]
fn fuzz_chat_template_a_very_long_line_is_refused_not_a_panic() {
    let t = format!(
        "{{% for message in messages %}}{{{{ m {} }}}}",
        "%es ".repeat(20_000)
    );
    let err = translate(&t, &specials()).expect_err("no translation");
    assert!(err.to_string().contains("longer than"), "{err}");
}

#[test]
fn modelfiles_with_huge_or_unterminated_values_are_bounded() {
    let huge = format!(
        "FROM ./m.gguf\nSYSTEM \"\"\"{}\"\"\"\n",
        "x".repeat(10 << 20)
    );
    let cmds = modelfile::parse(&huge).expect("valid");
    assert_eq!(cmds[1].args.len(), 10 << 20);
    let open = format!(
        "FROM ./m.gguf\nTEMPLATE \"\"\"{}",
        "{{ if .A }}".repeat(DEPTH)
    );
    assert!(modelfile::parse(&open).is_err());
    let many = "PARAMETER stop x\n".repeat(DEPTH) + "FROM ./m.gguf\n";
    assert_eq!(modelfile::parse(&many).expect("valid").len(), DEPTH + 1);
}
