//! `kvant register FILE.gguf --name NAME`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use sha2::Digest;

use kvant::convert::{end_of_text_tokens, jinja_chat_template, ChatTemplate};
use kvant::gguf::{GgufFile, GgufValue};
use kvant::ollama::{
    parse_header_lines, parse_host, register, Client, ClientOptions, Registration,
};

use crate::cli::args::RegisterArgs;

pub fn run(a: RegisterArgs) -> anyhow::Result<ExitCode> {
    let f = GgufFile::open(&a.file)?;
    let arch = f
        .metadata
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .unwrap_or("")
        .to_owned();
    let ctx = f
        .metadata
        .get(&format!("{arch}.context_length"))
        .and_then(GgufValue::as_u64)
        .map(|v| v as u32);
    // The model's own chat template, translated and proven, unless the
    // user gives one; the fallback is said, never silent.
    let chat = ChatTemplate::from_gguf(&f.metadata);
    let eos = end_of_text_tokens(&f.metadata);
    let jinja = jinja_chat_template(&f.metadata);
    drop(f);
    let user_template = a.template.is_some();
    let (template, stop) = match a.template {
        Some(t) => (t, eos),
        None => {
            if let ChatTemplate::Fallback { .. } = chat {
                eprintln!("kvant: warning: {}: {}", a.file.display(), chat.summary());
            }
            let mut stop = eos;
            for s in chat.stop() {
                if !stop.contains(s) {
                    stop.push(s.clone());
                }
            }
            (chat.template().to_owned(), stop)
        }
    };
    let mut h = sha2::Sha256::new();
    let mut file = std::fs::File::open(&a.file).with_context(|| a.file.display().to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let url = parse_host(
        a.ollama
            .as_deref()
            .or(std::env::var("OLLAMA_HOST").ok().as_deref()),
    )
    .base_url();
    let reg = Registration {
        gguf: a.file.clone(),
        sha256: hex::encode(h.finalize()),
        name: a.name.clone(),
        template: Some(template),
        stop,
        system: a.system,
        num_ctx: a.num_ctx.or(ctx),
        smoke_prompt: "Hello".into(),
        jinja,
        user_template,
        template_mode: a.template_mode,
        smoke_policy: a.chat_smoke,
        ..Default::default()
    };
    let headers = match &a.headers_file {
        Some(p) => parse_header_lines(
            &std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => vec![],
    };
    let client = Client::with_options(
        &url,
        &ClientOptions {
            headers,
            ca_file: a.ca_file.clone(),
        },
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let done = rt.block_on(register(&client, &reg))?;
    for w in &done.warnings {
        eprintln!("kvant: warning: {}: {w}", a.file.display());
    }
    println!(
        "registered {} on {url} (family {}, {}, {} template, capabilities [{}]); smoke test ({}): {:?}",
        done.name,
        done.family,
        done.quantization_level,
        done.template_mode,
        done.capabilities.join(", "),
        done.smoke_endpoint,
        done.smoke_output
    );
    Ok(ExitCode::SUCCESS)
}
