//! Jinja → Ollama Go template translation, proven by rendering: for the five
//! fixture templates and seven real-world templates (written out below as
//! their Hugging Face `chat_template` strings), `translate` succeeds and
//! `prove` renders minijinja and the Go template on every standard
//! conversation with identical text. Negative tests show the proof can fail
//! and that untranslatable templates are refused with a clear error.

mod support;

use kvant::tokenizer::chat_template::gotemplate::GoTemplate;
use kvant::tokenizer::chat_template::proof::{chat_data, generate_data};
use kvant::tokenizer::chat_template::{
    proof_conversations, prove, prove_report, translate, OllamaTemplate, Specials, TemplateError,
    TemplateFamily,
};

fn fixture(dir: &str) -> (String, Specials) {
    let jinja = std::fs::read_to_string(support::fixtures::path(&format!(
        "{dir}/chat_template.jinja"
    )))
    .unwrap();
    let cfg = support::fixtures::json(&format!("{dir}/tokenizer_config.json"));
    let tok = support::fixtures::json(&format!("{dir}/tokenizer.json"));
    (jinja, Specials::from_hf(&cfg, Some(&tok)))
}

fn specials(bos: &str, eos: &str, add_bos_token: bool) -> Specials {
    Specials {
        bos: Some(bos.into()),
        eos: Some(eos.into()),
        add_bos_token,
    }
}

/// Translates, proves independently, and checks the proof really compared
/// every conversation the Jinja template accepts.
fn translate_and_prove(
    jinja: &str,
    sp: &Specials,
    family: TemplateFamily,
    refused: usize,
) -> OllamaTemplate {
    let t = translate(jinja, sp).unwrap_or_else(|e| panic!("translate failed: {e}"));
    assert_eq!(t.family, family, "template:\n{}", t.template);
    prove(jinja, sp, &t).unwrap();
    let report = prove_report(jinja, sp, &t).unwrap();
    assert_eq!(report.refused_by_jinja.len(), refused, "{report:?}");
    // 6 conversations on /api/chat, the 2 single-turn ones also on /api/generate.
    let accepted = proof_conversations().len() - refused;
    let single_turn_accepted = if refused > 0 { 1 } else { 2 };
    assert_eq!(
        report.proven.len(),
        accepted + single_turn_accepted,
        "{report:?}"
    );
    assert!(!t.stop.is_empty());
    t
}

#[test]
fn fixture_llama_az_custom_endoftext_roles() {
    let (j, sp) = fixture("hf-llama-az");
    assert!(!sp.add_bos_token, "its post-processor adds no BOS");
    let t = translate_and_prove(&j, &sp, TemplateFamily::Custom, 0);
    assert!(t.template.contains("<|endoftext|>assistant\n"));
    assert!(t.stop.contains(&"<|endoftext|>".to_string()));
}

#[test]
fn fixture_qwen2_chatml_with_default_system_prompt() {
    let (j, sp) = fixture("hf-qwen2-az");
    let t = translate_and_prove(&j, &sp, TemplateFamily::ChatMl, 0);
    // The default system prompt is written only without a system message.
    let go = GoTemplate::parse(&t.template).unwrap();
    let conv = &proof_conversations()[0];
    let out = go.execute(&chat_data(&conv.messages)).unwrap();
    assert!(
        out.starts_with(
            "<|im_start|>system\nSən faydalı köməkçisən.<|im_end|>\n<|im_start|>user\n"
        ),
        "{out}"
    );
    let out = go.execute(&generate_data("Salam", "Özəl sistem.")).unwrap();
    assert!(!out.contains("faydalı"), "{out}");
    assert!(t.stop.contains(&"<|im_end|>".to_string()), "{:?}", t.stop);
}

#[test]
fn fixture_qwen3_chatml() {
    let (j, sp) = fixture("hf-qwen3-az");
    translate_and_prove(&j, &sp, TemplateFamily::ChatMl, 0);
}

#[test]
fn fixture_llama3_bos_left_to_tokenizer() {
    let (j, sp) = fixture("hf-llama3-az");
    assert!(
        sp.add_bos_token,
        "its post-processor adds <|begin_of_text|>"
    );
    let t = translate_and_prove(&j, &sp, TemplateFamily::Llama3, 0);
    assert!(!t.template.contains("<|begin_of_text|>"), "{}", t.template);
    // Without BOS from the tokenizer, the BOS text must be in the Go template.
    let no_bos = Specials {
        add_bos_token: false,
        ..sp
    };
    let t2 = translate_and_prove(&j, &no_bos, TemplateFamily::Llama3, 0);
    assert!(t2.template.contains("<|begin_of_text|>"));
}

#[test]
fn fixture_mistral_inst_refuses_system_in_jinja() {
    let (j, sp) = fixture("hf-mistral-sp-az");
    assert!(sp.add_bos_token);
    // Its template raises on a system message: those 3 conversations are refused, not proven.
    let t = translate_and_prove(&j, &sp, TemplateFamily::Llama2Inst, 3);
    assert!(
        t.stop.contains(&"</s>".to_string()) && t.stop.contains(&"[INST]".to_string()),
        "{:?}",
        t.stop
    );
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

const PHI3: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

const ALPACA: &str = "{% if messages[0]['role'] != 'system' %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' }}{% endif %}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}";

#[test]
fn real_world_chatml() {
    let t = translate_and_prove(
        CHATML,
        &specials("<s>", "<|im_end|>", false),
        TemplateFamily::ChatMl,
        0,
    );
    assert_eq!(
        t.stop,
        vec!["<|im_end|>".to_string(), "<|im_start|>user".to_string()]
    );
}

#[test]
fn real_world_llama3() {
    translate_and_prove(
        LLAMA3,
        &specials("<|begin_of_text|>", "<|eot_id|>", true),
        TemplateFamily::Llama3,
        0,
    );
}

#[test]
fn real_world_llama2_sys_block() {
    let t = translate_and_prove(
        LLAMA2,
        &specials("<s>", "</s>", true),
        TemplateFamily::Llama2Inst,
        0,
    );
    assert!(t.template.contains("<<SYS>>"), "{}", t.template);
}

#[test]
fn real_world_gemma_refuses_system() {
    translate_and_prove(
        GEMMA,
        &specials("<bos>", "<eos>", true),
        TemplateFamily::Gemma,
        3,
    );
}

#[test]
fn real_world_phi3_eos_trailer_without_generation_prompt() {
    translate_and_prove(
        PHI3,
        &specials("<s>", "<|endoftext|>", false),
        TemplateFamily::Phi3,
        0,
    );
}

#[test]
fn real_world_zephyr_trim_blocks() {
    translate_and_prove(
        ZEPHYR,
        &specials("<s>", "</s>", true),
        TemplateFamily::Zephyr,
        0,
    );
}

#[test]
fn real_world_alpaca_default_system() {
    translate_and_prove(
        ALPACA,
        &specials("<s>", "</s>", true),
        TemplateFamily::Alpaca,
        0,
    );
}

#[test]
fn tool_calling_template_is_refused_with_reason() {
    let tools = format!("{{% if tools %}}{{{{ '<|im_start|>system\\nTools: ' + tools | tojson + '<|im_end|>\\n' }}}}{{% endif %}}{CHATML}");
    let e = translate(&tools, &specials("<s>", "<|im_end|>", false)).unwrap_err();
    assert!(matches!(e, TemplateError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("tools"), "{e}");
}

#[test]
fn python_method_template_is_refused_with_reason() {
    let j = CHATML.replace(
        "message['content']",
        "message['content'].split('\\n') | join(' ')",
    );
    let e = translate(&j, &specials("<s>", "<|im_end|>", false)).unwrap_err();
    assert!(matches!(e, TemplateError::Jinja { .. }), "{e}");
    assert!(e.to_string().contains("split"), "{e}");
}

#[test]
fn content_transforming_template_is_refused() {
    let j = CHATML.replace("message['content']", "message['content'] | upper");
    let e = translate(&j, &specials("<s>", "<|im_end|>", false)).unwrap_err();
    assert!(e.to_string().contains("verbatim"), "{e}");
}

#[test]
fn wrong_go_template_fails_the_proof() {
    let sp = specials("<s>", "<|im_end|>", false);
    let good = translate(CHATML, &sp).unwrap();
    // One stray space after the end-of-turn marker.
    let wrong = OllamaTemplate {
        template: good.template.replacen("<|im_end|>\n", "<|im_end|> \n", 1),
        ..good.clone()
    };
    assert_ne!(wrong.template, good.template);
    let e = prove(CHATML, &sp, &wrong).unwrap_err();
    assert!(matches!(e, TemplateError::Mismatch { .. }), "{e}");
    // Another family's template, proven against ChatML, fails too.
    let llama3 = translate(LLAMA3, &specials("<|begin_of_text|>", "<|eot_id|>", true)).unwrap();
    assert!(matches!(
        prove(CHATML, &sp, &llama3),
        Err(TemplateError::Mismatch { .. })
    ));
    // Ollama's classic raw template is not a chat template.
    let raw = OllamaTemplate {
        template: "{{ .Prompt }}".into(),
        ..good
    };
    assert!(matches!(
        prove(CHATML, &sp, &raw),
        Err(TemplateError::Mismatch { .. })
    ));
}

/// The emulator's structural template check (text/template's parse errors)
/// accepts every generated template, and its renderer (fields and
/// if/else/end) agrees with ours on the `.Prompt`/`.System` branch.
#[test]
fn emulator_accepts_and_renders_the_legacy_branch() {
    let emu = support::fixtures::dir().join("../ollama-emulator");
    assert!(
        emu.join("ollama_emulator.py").is_file(),
        "emulator not found at {}",
        emu.display()
    );
    let mut cases = Vec::new();
    for (j, sp) in [
        (CHATML.to_string(), specials("<s>", "<|im_end|>", false)),
        (ALPACA.to_string(), specials("<s>", "</s>", true)),
        fixture("hf-qwen2-az"),
        fixture("hf-mistral-sp-az"),
    ] {
        let t = translate(&j, &sp).unwrap();
        let (_, legacy) = t
            .template
            .rsplit_once("{{ end }}{{ end }}{{ else }}")
            .unwrap();
        let legacy = legacy.strip_suffix("{{ end }}").unwrap().to_string();
        let ours = GoTemplate::parse(&legacy)
            .unwrap()
            .execute(&generate_data("Salam!", "Qısa ol."))
            .unwrap();
        cases.push(serde_json::json!({"full": t.template, "legacy": legacy, "ours": ours}));
    }
    let script = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import ollama_emulator as e
cases = json.load(sys.stdin)
out = []
for c in cases:
    out.append({"check": e.check_template(c["full"]),
                "render": e.GoTemplate(c["legacy"], e.OLLAMA_TEMPLATE_FUNCS).execute({"Prompt": "Salam!", "System": "Qısa ol.", "Suffix": "", "Response": ""})})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&emu)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to run the Ollama emulator");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (case, res) in cases.iter().zip(&results) {
        assert!(
            res["check"].is_null(),
            "emulator rejects {}: {}",
            case["full"],
            res["check"]
        );
        assert_eq!(
            res["render"], case["ours"],
            "legacy branch {}",
            case["legacy"]
        );
    }
}
