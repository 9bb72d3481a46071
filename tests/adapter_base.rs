//! Issue 12, finding an adapter's base: through a Hugging Face cache laid
//! out as `huggingface_hub` does (refs, snapshots, symlinked blobs;
//! `HF_HUB_CACHE`, `HF_HOME` and `~/.cache` honoured), and through each
//! other rule; a missing base and a base that does not fit give one-line
//! errors naming what matters.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kvant::quant::FileType;
use serde_json::Value;

use support::fixtures;
use support::logits::{check_logits, convert_to};

/// A copy of adapter fixture `name` in `parent/as_name`, its config
/// edited by `edit`.
fn adapter_copy(parent: &Path, name: &str, as_name: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let dst = parent.join(as_name);
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(
        fixtures::path(&format!("{name}/adapter_model.safetensors")),
        dst.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg = fixtures::json(&format!("{name}/adapter_config.json"));
    edit(&mut cfg);
    std::fs::write(dst.join("adapter_config.json"), cfg.to_string()).unwrap();
    dst
}

/// Lays out `repo_id` in the hub cache `hub` as huggingface_hub does: the
/// files as blobs named by content, a snapshot of symlinks into them, and
/// `refs/<rev>` naming the commit.
fn hf_cache(hub: &Path, repo_id: &str, rev: &str, commit: &str, files_from: &Path) {
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    for e in std::fs::read_dir(files_from).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        use sha2::Digest;
        let blob = hex::encode(sha2::Sha256::digest(&bytes));
        std::fs::write(repo.join("blobs").join(&blob), &bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(e.file_name()))
            .unwrap();
    }
    std::fs::write(repo.join("refs").join(rev), commit).unwrap();
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// hf-llama-az cached in `hub` under its hub id, at refs/main.
fn llama_cache(hub: &Path) {
    let files = fixtures::path("hf-llama-az");
    hf_cache(hub, "kvant-fixtures/hf-llama-az", "main", COMMIT, &files);
}

/// Runs `kvant convert SRC -t f32 -o OUT` with only the given Hugging
/// Face variables and HOME set.
fn kvant_convert(
    src: &Path,
    out: &Path,
    home: &Path,
    env: &[(&str, &Path)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvant"));
    cmd.args(["convert", "-t", "f32", "-o"])
        .arg(out)
        .arg(src)
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE")
        .env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn check_ok(run: &std::process::Output, out: &Path) {
    assert!(
        run.status.success(),
        "kvant failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    check_logits(out, &fixtures::json("lora-llama-az/expected.json"), 0.01);
}

#[test]
fn base_is_found_in_the_hugging_face_cache() {
    let t = tempfile::tempdir().unwrap();
    let lone = adapter_copy(&t.path().join("lone"), "lora-llama-az", "ft", |_| {});
    let base_files = fixtures::path("hf-llama-az");
    let empty = t.path().join("empty-home");
    std::fs::create_dir_all(&empty).unwrap();

    // HF_HOME/hub
    let hf_home = t.path().join("hf-home");
    llama_cache(&hf_home.join("hub"));
    let out = t.path().join("a.gguf");
    check_ok(
        &kvant_convert(&lone, &out, &empty, &[("HF_HOME", &hf_home)]),
        &out,
    );

    // HF_HUB_CACHE wins over HF_HOME.
    let out = t.path().join("b.gguf");
    let nowhere = t.path().join("nowhere");
    let run = kvant_convert(
        &lone,
        &out,
        &empty,
        &[
            ("HF_HUB_CACHE", &hf_home.join("hub")),
            ("HF_HOME", &nowhere),
        ],
    );
    check_ok(&run, &out);

    // ~/.cache/huggingface/hub when neither is set.
    let home = t.path().join("home");
    llama_cache(&home.join(".cache/huggingface/hub"));
    let out = t.path().join("c.gguf");
    check_ok(&kvant_convert(&lone, &out, &home, &[]), &out);

    // The config's revision picks refs/<revision>, not main.
    let rev_hub = t.path().join("rev-hub");
    hf_cache(
        &rev_hub,
        "kvant-fixtures/hf-llama-az",
        "v1",
        COMMIT,
        &base_files,
    );
    let repo = rev_hub.join("models--kvant-fixtures--hf-llama-az");
    std::fs::write(
        repo.join("refs/main"),
        "ffffffffffffffffffffffffffffffffffffffff",
    )
    .unwrap();
    let pinned = adapter_copy(&t.path().join("pinned"), "lora-llama-az", "ft", |c| {
        c["revision"] = "v1".into();
    });
    let out = t.path().join("d.gguf");
    check_ok(
        &kvant_convert(&pinned, &out, &empty, &[("HF_HUB_CACHE", &rev_hub)]),
        &out,
    );
    let run = kvant_convert(
        &lone,
        &t.path().join("e.gguf"),
        &empty,
        &[("HF_HUB_CACHE", &rev_hub)],
    );
    assert!(
        !run.status.success(),
        "refs/main names a snapshot that is not there"
    );
}

#[test]
fn missing_base_is_one_line_listing_every_place_looked() {
    let t = tempfile::tempdir().unwrap();
    let lone = adapter_copy(&t.path().join("lone"), "lora-llama-az", "ft", |_| {});
    let hf_home = t.path().join("hf-home");
    let out = t.path().join("x.gguf");
    let run = kvant_convert(&lone, &out, t.path(), &[("HF_HOME", &hf_home)]);
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    for place in [
        lone.join("kvant-fixtures/hf-llama-az")
            .display()
            .to_string(),
        t.path().join("lone/hf-llama-az").display().to_string(),
        hf_home
            .join("hub/models--kvant-fixtures--hf-llama-az")
            .display()
            .to_string(),
        "kvant.toml".to_owned(),
        "base = ".to_owned(),
    ] {
        assert!(err.contains(&place), "{place} not in: {err}");
    }
    assert!(!out.exists());
}

fn merged_ok(src: &Path) {
    let d = tempfile::tempdir().unwrap();
    let (gguf, _) = convert_to(src, FileType::F32, d.path(), None);
    check_logits(&gguf, &fixtures::json("lora-llama-az/expected.json"), 0.01);
}

#[test]
fn base_from_kvant_toml_local_paths_and_beside_the_drop() {
    let t = tempfile::tempdir().unwrap();
    let base = fixtures::path("hf-llama-az");
    // 1. base in the drop's kvant.toml (relative to the drop)
    let bases = t.path().join("bases");
    std::fs::create_dir_all(&bases).unwrap();
    std::os::unix::fs::symlink(&base, bases.join("llama")).unwrap();
    let a = adapter_copy(&t.path().join("one"), "lora-llama-az", "ft", |c| {
        c["base_model_name_or_path"] = "nobody/nothing".into();
    });
    std::fs::write(a.join("kvant.toml"), "base = \"../../bases/llama\"\n").unwrap();
    merged_ok(&a);
    // 2. base_model_name_or_path absolute, then relative to the drop
    let abs = base.display().to_string();
    merged_ok(&adapter_copy(
        &t.path().join("two"),
        "lora-llama-az",
        "ft",
        |c| {
            c["base_model_name_or_path"] = abs.clone().into();
        },
    ));
    merged_ok(&adapter_copy(
        &t.path().join("three"),
        "lora-llama-az",
        "ft",
        |c| {
            c["base_model_name_or_path"] = "../../bases/llama".into();
        },
    ));
    // 3. a folder of the name's last component beside the drop (an inbox)
    let inbox = t.path().join("inbox");
    let a = adapter_copy(&inbox, "lora-llama-az", "my-finetune", |_| {});
    std::os::unix::fs::symlink(&base, inbox.join("hf-llama-az")).unwrap();
    merged_ok(&a);
}

fn refusal(src: &Path) -> String {
    let d = tempfile::tempdir().unwrap();
    let req = kvant::convert::ConvertRequest {
        source: src.to_owned(),
        outputs: vec![kvant::convert::OutputSpec {
            file_type: FileType::F32,
            path: d.path().join("x.gguf"),
        }],
        ..Default::default()
    };
    let err = kvant::convert::convert(&req, &kvant::convert::NoProgress, &Default::default())
        .expect_err("refused")
        .to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(!d.path().join("x.gguf").exists());
    err
}

#[test]
fn a_base_that_does_not_fit_names_the_tensor_and_both_shapes() {
    let t = tempfile::tempdir().unwrap();
    let qwen = fixtures::path("hf-qwen2-az").display().to_string();
    let a = adapter_copy(t.path(), "lora-llama-az", "on-qwen", |_| {});
    std::fs::write(a.join("kvant.toml"), format!("base = \"{qwen}\"\n")).unwrap();
    let err = refusal(&a);
    for want in [
        "model.layers.0.mlp.down_proj.weight",
        "[128, 352]",
        "[128, 384]",
    ] {
        assert!(err.contains(want), "{want} not in: {err}");
    }
    // Another architecture: the targeted modules do not exist.
    let gpt2 = fixtures::path("hf-gpt2-az").display().to_string();
    let a = adapter_copy(t.path(), "lora-llama-az", "on-gpt2", |_| {});
    std::fs::write(a.join("kvant.toml"), format!("base = \"{gpt2}\"\n")).unwrap();
    let err = refusal(&a);
    assert!(
        err.contains("model.layers.0.mlp.down_proj.weight") && err.contains("no such tensor"),
        "{err}"
    );
}

#[test]
fn other_peft_types_are_not_lora_adapters() {
    let t = tempfile::tempdir().unwrap();
    let a = adapter_copy(t.path(), "lora-llama-az", "ia3", |c| {
        c["peft_type"] = "IA3".into();
    });
    let err = refusal(&a);
    assert!(
        err.contains("not a LoRA adapter") && err.contains("IA3"),
        "{err}"
    );
}
