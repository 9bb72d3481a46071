//! The daemon end to end: the real `kvant watch` binary, the Ollama
//! emulator (real llama.cpp behind /api/generate), real fixtures dropped
//! into a real inbox.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kvant::daemon::Step;
use serde_json::Value;

use support::daemon::{
    copy_dir, digest_of, drop_folder, setup, state, tags, wait_for, wait_for_version, walk, Daemon,
};
use support::emulator::Emulator;
use support::fixtures;

#[test]
fn public_fixtures_dropped_in_appear_in_ollama() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    drop_folder(dir.path(), "nanogpt-az", "az-gpt");
    drop_folder(dir.path(), "hf-gpt2-az", "hf-gpt2-az");
    // a lone ckpt.pt with its tokenizer beside it
    std::fs::copy(
        fixtures::path("nanogpt-az/az_bpe_tokenizer.json"),
        dir.path().join("inbox/tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures::path("nanogpt-az/ckpt.pt"),
        dir.path().join("staging.pt"),
    )
    .unwrap();
    std::fs::rename(
        dir.path().join("staging.pt"),
        dir.path().join("inbox/lone.pt"),
    )
    .unwrap();
    let st = wait_for(
        dir.path(),
        &["az-gpt", "hf-gpt2-az", "lone.pt"],
        Step::Registered,
        &d,
        240,
    );
    let listed = tags(&emu.url);
    for (drop, model) in [
        ("az-gpt", "az-gpt"),
        ("hf-gpt2-az", "hf-gpt2-az"),
        ("lone.pt", "lone"),
    ] {
        let rec = &st.drops[drop];
        assert_eq!(rec.model.as_deref(), Some(model));
        let name = format!("{model}:q4_k_m");
        let m = listed
            .iter()
            .find(|m| m["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not listed: {listed:?}"));
        assert_eq!(m["details"]["family"], "gpt2");
        assert_eq!(m["details"]["quantization_level"], "Q4_K_M");
        assert!(listed
            .iter()
            .any(|m| m["name"] == format!("{model}:latest").as_str()));
        // The Modelfile parses with Ollama's rules; the report records the smoke test.
        let out = &rec.outputs[0];
        let mf = std::fs::read_to_string(out.path.with_extension("Modelfile")).unwrap();
        let cmds = kvant::modelfile::parse(&mf).unwrap();
        assert!(
            cmds.iter()
                .any(|c| c.name == "parameter" && c.args == "num_ctx 128"),
            "{mf}"
        );
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(
                out.path
                    .parent()
                    .unwrap()
                    .join(format!("{model}.report.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let smoke = report["registration"][0]["smoke_output"].as_str().unwrap();
        assert!(!smoke.is_empty());
    }
    assert!(d.terminate().success(), "SIGTERM must exit 0");
}

#[test]
fn a_slow_copy_is_processed_once_after_it_ends() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    std::fs::copy(
        fixtures::path("nanogpt-az/az_bpe_tokenizer.json"),
        dir.path().join("inbox/tokenizer.json"),
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &emu.url, &["--settle", "3"]);
    let bytes = std::fs::read(fixtures::path("nanogpt-az/ckpt.pt")).unwrap();
    let target = dir.path().join("inbox/slow.pt");
    let third = bytes.len() / 3;
    for (i, chunk) in [
        &bytes[..third],
        &bytes[third..2 * third],
        &bytes[2 * third..],
    ]
    .iter()
    .enumerate()
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)
            .unwrap();
        f.write_all(chunk).unwrap();
        f.sync_all().unwrap();
        if i < 2 {
            std::thread::sleep(Duration::from_secs(2));
            // never read early: nothing is queued while the copy goes on
            let st = state(dir.path());
            assert!(
                !st.drops.contains_key("slow.pt"),
                "read during the copy: {:?}",
                st.drops.get("slow.pt")
            );
        }
    }
    let st = wait_for(dir.path(), &["slow.pt"], Step::Registered, &d, 120);
    assert!(st.drops["slow.pt"].error.is_none());
    // Processed once: the file is created once (the type tag), and the
    // version tag and `latest` are copies of it.
    let log = emu.log();
    assert_eq!(log.matches("/api/create").count(), 1, "one create:\n{log}");
    assert_eq!(log.matches("/api/copy").count(), 2, "two copies:\n{log}");
}

#[test]
fn bad_drops_fail_clearly_and_the_daemon_goes_on() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    let bad = [
        "truncated.pt",
        "random-bytes.pt",
        "empty.pt",
        "evil-pickle.pt",
        "path-traversal.pt",
        "lying-header.safetensors",
        "huge-header-len.safetensors",
        "complex-dtype.pt",
    ];
    for b in bad {
        let staged = dir.path().join(format!("s-{b}"));
        std::fs::copy(fixtures::path(&format!("bad/{b}")), &staged).unwrap();
        std::fs::rename(&staged, dir.path().join("inbox").join(b)).unwrap();
    }
    drop_folder(dir.path(), "nanogpt-az", "good");
    let st = wait_for(dir.path(), &bad, Step::Failed, &d, 120);
    for b in bad {
        let e = st.drops[b].error.clone().unwrap_or_default();
        assert!(e.contains(b) && e.lines().count() == 1, "{b}: {e}");
    }
    wait_for(dir.path(), &["good"], Step::Registered, &d, 120);
    assert!(!Path::new("/tmp/kvant-evil-marker").exists());
    let status = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(["status", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("evil-pickle.pt")
            && table.contains("failed")
            && table.contains("posix.system"),
        "{table}"
    );
}

#[test]
fn ollama_down_at_first_then_faults_nothing_is_lost() {
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = setup();
    let d = Daemon::start(dir.path(), &url, &[]);
    drop_folder(dir.path(), "nanogpt-az", "az-gpt");
    // Converted while Ollama is down; registration waits and retries.
    let st = wait_for(dir.path(), &["az-gpt"], Step::Converted, &d, 120);
    assert!(st.drops["az-gpt"].outputs[0].path.is_file());
    std::thread::sleep(Duration::from_secs(2));
    let emu = Emulator::start(&[
        "--port",
        &port.to_string(),
        "--faults",
        "blob_reset_once,create_500_once,refuse_first=3",
    ]);
    let _ = emu.url.clone();
    wait_for(dir.path(), &["az-gpt"], Step::Registered, &d, 180);
    let listed = tags(&format!("http://127.0.0.1:{port}"));
    assert!(
        listed.iter().any(|m| m["name"] == "az-gpt:q4_k_m"),
        "{listed:?}"
    );
}

#[test]
fn kill_9_at_any_moment_then_restart_registers_exactly_once() {
    let emu = Emulator::start(&["--faults", "slow_create=0.2"]);
    let dir = setup();
    drop_folder(dir.path(), "nanogpt-k256", "k256");
    drop_folder(dir.path(), "nanogpt-az", "az");
    // Kill the daemon repeatedly at different moments (mid-conversion,
    // mid-upload, mid-create), restarting it each time.
    for wait_ms in [1500u64, 2500, 3500, 4500] {
        let d = Daemon::start(dir.path(), &emu.url, &["--types", "q4_k_m,q8_0"]);
        std::thread::sleep(Duration::from_millis(wait_ms));
        d.kill9();
        // never a half file in the output
        for e in walk(&dir.path().join("out")) {
            let name = e.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".gguf") {
                kvant::gguf::GgufFile::open(&e)
                    .unwrap_or_else(|err| panic!("half file {}: {err}", e.display()));
            }
        }
    }
    let d = Daemon::start(dir.path(), &emu.url, &["--types", "q4_k_m,q8_0"]);
    let st = wait_for(dir.path(), &["k256", "az"], Step::Registered, &d, 300);
    for rec in st.drops.values() {
        for o in &rec.outputs {
            let bytes = std::fs::read(&o.path).unwrap();
            use sha2::Digest;
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                o.sha256,
                "{}",
                o.path.display()
            );
        }
    }
    // temporaries swept, every model listed once under each name
    assert!(walk(&dir.path().join("out"))
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".kvant-tmp")));
    let listed = tags(&emu.url);
    let mut names: Vec<String> = listed
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
    for m in [
        "k256:q4_k_m",
        "k256:q8_0",
        "az:q4_k_m",
        "az:q8_0",
        "k256:latest",
        "az:latest",
    ] {
        assert!(names.iter().any(|x| x == m), "{m} missing: {names:?}");
    }
}

#[test]
fn an_overwritten_checkpoint_is_a_new_version_and_latest_follows() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    drop_folder(dir.path(), "nanogpt-az", "az");
    let st = wait_for(dir.path(), &["az"], Step::Registered, &d, 120);
    assert_eq!(st.drops["az"].version_label.as_deref(), Some("iter400"));
    // nanoGPT rewrites ckpt.pt in place at every eval: simulate with the
    // k256 run's checkpoint (same tokenizer, iter 300).
    let staged = dir.path().join("new.pt");
    std::fs::copy(fixtures::path("nanogpt-k256/ckpt.pt"), &staged).unwrap();
    std::fs::rename(&staged, dir.path().join("inbox/az/ckpt.pt")).unwrap();
    wait_for_version(dir.path(), "az", &d, 120, |v| v == "iter300");
    let listed = tags(&emu.url);
    let digest = |name: &str| digest_of(&listed, name);
    assert_eq!(digest("az:latest"), digest("az:q4_k_m-iter300"));
    assert_ne!(
        digest("az:q4_k_m-iter300"),
        digest("az:q4_k_m-iter400"),
        "the old version stays under its own tag"
    );
}

#[test]
fn service_install_writes_units_systemd_and_launchd_accept() {
    let home = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_kvant"))
        .args(["service", "install"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let unit = home.path().join(".config/systemd/user/kvant.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let bin = std::fs::canonicalize(env!("CARGO_BIN_EXE_kvant")).unwrap();
    assert!(
        text.contains(&format!("ExecStart={} watch", bin.display())),
        "{text}"
    );
    let runtime = home.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&unit)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("systemd-analyze (apt install systemd)");
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !err.contains("kvant.service:"),
        "systemd-analyze verify: {err}"
    );
    // The hardened system unit verifies too.
    let sys = home.path().join("kvant-system.service");
    std::fs::write(
        &sys,
        kvant::daemon::render_system_unit(&bin, &[home.path().to_owned()]),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&sys)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !err.contains("kvant-system.service:"),
        "system unit: {err}"
    );
    // launchd: a property list with the keys launchd needs.
    let plist = home.path().join("agent.plist");
    std::fs::write(
        &plist,
        kvant::daemon::render_launchd_plist(&bin, home.path()),
    )
    .unwrap();
    let check = Command::new("python3")
        .arg("-c")
        .arg("import plistlib,sys; p=plistlib.load(open(sys.argv[1],'rb')); assert p['Label'] and p['ProgramArguments'][0]==sys.argv[2] and p['RunAtLoad'] and p['KeepAlive'] and p['StandardOutPath'] and p['StandardErrorPath'], p")
        .arg(&plist)
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Peak resident memory of a live process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// Names of drops in the order the log says they started converting.
fn conversion_order(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" converting"))
        .filter_map(|l| {
            let i = l.find("drop=")? + 5;
            Some(l[i..].split_whitespace().next()?.to_owned())
        })
        .collect()
}

/// A burst of 20 drops: converted one at a time in arrival order (named so
/// that alphabetical order is the reverse), all registered, and the
/// daemon's peak memory after 20 models is that of one model: it may grow
/// by what overlapping one registration with the next conversion costs
/// (bounded here by two checkpoints' size), never by the 19 models queued
/// (≥ 19 checkpoints if drops were held).
#[test]
fn a_burst_of_20_drops_is_processed_in_order_with_memory_of_one_model() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    let ckpt_size = std::fs::metadata(fixtures::path("nanogpt-az/ckpt.pt"))
        .unwrap()
        .len();

    drop_folder(dir.path(), "nanogpt-az", "burst-20");
    wait_for(dir.path(), &["burst-20"], Step::Registered, &d, 180);
    let one_model = peak_rss(d.child.id());

    // Arrival order burst-19, burst-18, ..., burst-01: the reverse of the
    // names' order, so a name-ordered queue would fail.
    let arrivals: Vec<String> = (1..20).rev().map(|i| format!("burst-{i:02}")).collect();
    for name in &arrivals {
        drop_folder(dir.path(), "nanogpt-az", name);
        std::thread::sleep(Duration::from_millis(30));
    }
    let all: Vec<&str> = arrivals.iter().map(String::as_str).collect();
    let st = wait_for(dir.path(), &all, Step::Registered, &d, 900);
    let twenty_models = peak_rss(d.child.id());

    let mut by_seq: Vec<(&String, u64)> = st.drops.iter().map(|(n, r)| (n, r.seq)).collect();
    by_seq.sort_by_key(|(_, s)| *s);
    let queued: Vec<&String> = by_seq.iter().map(|(n, _)| *n).skip(1).collect();
    assert_eq!(queued, arrivals.iter().collect::<Vec<_>>(), "queue order");
    let log = d.log();
    let mut expected = vec!["burst-20".to_owned()];
    expected.extend(arrivals.iter().cloned());
    assert_eq!(conversion_order(&log), expected, "conversion order\n{log}");

    let listed = tags(&emu.url);
    for name in &expected {
        let tag = format!("{name}:q8_0");
        assert!(
            listed.iter().any(|m| m["name"] == tag.as_str()),
            "{tag} not registered"
        );
    }
    eprintln!(
        "peak RSS: one model {:.1} MiB, twenty models {:.1} MiB (checkpoint {:.1} MiB)",
        one_model as f64 / 1048576.0,
        twenty_models as f64 / 1048576.0,
        ckpt_size as f64 / 1048576.0
    );
    assert!(
        twenty_models < one_model + 2 * ckpt_size,
        "peak RSS grew from {one_model} to {twenty_models} bytes over 20 drops"
    );
    assert!(d.terminate().success());
}

/// A chat model's Modelfile gets the proven Go translation of its Jinja
/// template and the end-of-turn stop; a template that cannot be proven
/// falls back to `{{ .Prompt }}`, with the reason in the log (naming the
/// drop) and in the report.
#[test]
fn chat_templates_reach_the_modelfile_proven_or_fall_back_with_a_reason() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &["--types", "q8_0"]);
    drop_folder(dir.path(), "hf-qwen2-az", "az-qwen");
    // hf-gpt2-az with a tool-calling template: not translatable.
    let staging = dir.path().join("staging-tools");
    copy_dir(&fixtures::path("hf-gpt2-az"), &staging);
    let cfg_path = staging.join("tokenizer_config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = Value::from(
        "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}<|endoftext|>{{ m.role }}\n{{ m.content }}{% endfor %}",
    );
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    std::fs::rename(&staging, dir.path().join("inbox/az-tools")).unwrap();
    // GGUF in: an F32 GGUF of the same chat model is quantized and
    // registered like a checkpoint, its template read from inside it.
    let gguf_req = kvant::convert::ConvertRequest {
        source: fixtures::path("hf-qwen2-az"),
        outputs: vec![kvant::convert::OutputSpec {
            file_type: kvant::quant::FileType::F32,
            path: dir.path().join("qwen-f32.gguf"),
        }],
        ..Default::default()
    };
    kvant::convert::convert(&gguf_req, &kvant::convert::NoProgress, &Default::default()).unwrap();
    std::fs::rename(
        dir.path().join("qwen-f32.gguf"),
        dir.path().join("inbox/qwen-f32.gguf"),
    )
    .unwrap();

    let st = wait_for(
        dir.path(),
        &["az-qwen", "az-tools", "qwen-f32.gguf"],
        Step::Registered,
        &d,
        300,
    );
    let modelfile = |drop: &str| {
        let p = st.drops[drop].outputs[0].path.with_extension("Modelfile");
        kvant::modelfile::parse(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let arg = |cmds: &[kvant::modelfile::Command], name: &str| {
        cmds.iter()
            .find(|c| c.name == name)
            .map(|c| c.args.clone())
            .unwrap_or_default()
    };
    let report = |drop: &str| -> Value {
        let out = &st.drops[drop].outputs[0].path;
        let model = st.drops[drop].model.clone().unwrap();
        serde_json::from_str(
            &std::fs::read_to_string(out.parent().unwrap().join(format!("{model}.report.json")))
                .unwrap(),
        )
        .unwrap()
    };

    let qwen = modelfile("az-qwen");
    let qwen_report = report("az-qwen");
    let chat = &qwen_report["conversion"]["chat_template"];
    assert_eq!(chat["status"], "translated", "{chat}");
    assert_eq!(chat["family"], "ChatML");
    assert_eq!(arg(&qwen, "template"), chat["template"].as_str().unwrap());
    assert!(qwen
        .iter()
        .any(|c| c.name == "parameter" && c.args == "stop <|im_end|>"));
    let client = kvant::ollama::Client::new(&emu.url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shown = rt.block_on(client.show("az-qwen:q8_0")).unwrap();
    assert_eq!(shown["template"], chat["template"]);
    assert!(!qwen_report["registration"][0]["smoke_output"]
        .as_str()
        .unwrap()
        .is_empty());

    let from_gguf = modelfile("qwen-f32.gguf");
    assert_eq!(
        arg(&from_gguf, "template"),
        chat["template"].as_str().unwrap()
    );
    let gguf_model = st.drops["qwen-f32.gguf"].model.clone().unwrap();
    let shown = rt
        .block_on(client.show(&format!("{gguf_model}:q8_0")))
        .unwrap();
    assert_eq!(shown["details"]["family"], "qwen2");
    assert_eq!(shown["details"]["quantization_level"], "Q8_0");
    assert_eq!(shown["template"], chat["template"]);

    let tools = modelfile("az-tools");
    assert_eq!(arg(&tools, "template"), "{{ .Prompt }}");
    let tools_chat = &report("az-tools")["conversion"]["chat_template"];
    assert_eq!(tools_chat["status"], "fallback", "{tools_chat}");
    assert!(
        tools_chat["reason"].as_str().unwrap().contains("tools"),
        "{tools_chat}"
    );
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("az-tools") && l.contains("{{ .Prompt }}")),
        "{log}"
    );
    assert!(d.terminate().success());
}

#[test]
fn a_lora_adapter_drop_is_merged_registered_and_versioned() {
    let emu = Emulator::start(&[]);
    let dir = setup();
    let d = Daemon::start(dir.path(), &emu.url, &[]);
    let staging = dir.path().join("staging-ft");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::copy(
            fixtures::path(&format!("lora-llama-az/{f}")),
            staging.join(f),
        )
        .unwrap();
    }
    let base = fixtures::path("hf-llama-az");
    std::fs::write(
        staging.join("kvant.toml"),
        format!("base = \"{}\"\n", base.display()),
    )
    .unwrap();
    std::fs::rename(&staging, dir.path().join("inbox/az-ft")).unwrap();
    let st = wait_for(dir.path(), &["az-ft"], Step::Registered, &d, 240);
    let rec = &st.drops["az-ft"];
    assert_eq!(rec.model.as_deref(), Some("az-ft"), "named after the drop");
    let first = rec.version_label.clone().expect("a version");
    let listed = tags(&emu.url);
    let m = listed
        .iter()
        .find(|m| m["name"] == "az-ft:q4_k_m")
        .unwrap_or_else(|| panic!("az-ft:q4_k_m not listed: {listed:?}"));
    assert_eq!(m["details"]["family"], "llama");
    let out = &rec.outputs[0];
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path.parent().unwrap().join("az-ft.report.json")).unwrap(),
    )
    .unwrap();
    assert!(!report["registration"][0]["smoke_output"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(
        report["conversion"]["hparams"]["adapter"]["base"],
        base.display().to_string()
    );

    // The next training checkpoint overwrites the adapter's weights (same
    // rank and alpha, other modules): a new version, and latest follows.
    let staged = dir.path().join("next.safetensors");
    std::fs::copy(
        fixtures::path("lora-llama-head/adapter_model.safetensors"),
        &staged,
    )
    .unwrap();
    std::fs::rename(
        &staged,
        dir.path().join("inbox/az-ft/adapter_model.safetensors"),
    )
    .unwrap();
    let second = wait_for_version(dir.path(), "az-ft", &d, 180, |v| v != first);
    let listed = tags(&emu.url);
    let digest = |name: &str| digest_of(&listed, name);
    assert_eq!(
        digest("az-ft:latest"),
        digest(&format!("az-ft:q4_k_m-{second}"))
    );
    assert_ne!(
        digest(&format!("az-ft:q4_k_m-{second}")),
        digest(&format!("az-ft:q4_k_m-{first}"))
    );
}
