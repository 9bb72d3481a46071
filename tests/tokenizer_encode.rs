//! kvant's own tokenizer (`TextTokenizer`, built from a GGUF's
//! `tokenizer.ggml.*` keys alone) against llama.cpp's `llama_tokenize` on
//! the same file: equal ids for every fixture tokenizer, on the held-out
//! corpus whole and line by line, with and without specials, and on
//! strings chosen to break pre-tokenizers.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use kvant::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter, TensorInfo};
use kvant::quant::FileType;
use kvant::tokenizer::encode::{read_token_file, EncodeError, TextTokenizer};
use kvant::tokenizer::{discover, gguf_vocab};

use support::fixtures;
use support::llama::Model;
use support::logits::convert_to;

/// Texts that exercise every branch of the splitters and SentencePiece.
fn nasty() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "  ",
        "   leading spaces",
        "trailing spaces   ",
        "double  space and   triple",
        " \n ",
        "\n",
        "\n\n\n",
        "a\n\nb\n",
        "\t tab\tand\u{b}vt\u{c}ff",
        "\r\nwindows\r\nlines\r\n",
        "1234567890",
        "12 345 6789012 3.14159 1,000,000",
        "Telefon: 051-307-12-55. Tarix: 1987-03-16.",
        "emoji 😀🎉👍🏽 ok 🫨",
        "ə ğ ı ş ç ö ü Ə Ğ İ Ş Ç Ö Ü",
        "MiXeD CaSe WORDS and İSTANBUL ıSPARTA",
        "it's I'M we'LL they're 's 'S 'd 'Ve ''",
        "Bakı'nın Azərbaycan'da",
        "a\u{301} \u{301} e\u{301}\u{302} x \u{301}y",
        "日本語のテキスト",
        "ﬁ ligature, non\u{a0}breaking, zero\u{200b}width, \u{3000}ideographic",
        "\u{85}next line \u{2028} line sep",
        "Ⅻ ½ ٣ ①",
        "\u{feff}bom",
        "<|endoftext|> <|im_start|>user\nhi<|im_end|>",
        "<s> </s> [INST] hi [/INST] <unk>",
        "▁already▁escaped ▁",
        "LLM-imiz a-b_c.d,e!f?g (x) [y] {z} ~`@#$%^&*+=|\\/<>",
        "...!!!???---",
        "  \n\n  x  \n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a".repeat(300));
    v.push("ab".repeat(150) + " " + &"9".repeat(40));
    v.push(" ".repeat(17) + "x" + &"\n".repeat(5));
    v
}

fn heldout() -> String {
    let p = fixtures::path("corpus/heldout.txt");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The whole corpus, each line (with and without its newline) and the
/// nasty strings.
fn texts() -> Vec<String> {
    let h = heldout();
    let mut t = vec![h.clone()];
    t.extend(h.lines().map(str::to_owned));
    t.extend(h.split_inclusive('\n').map(str::to_owned));
    t.extend(nasty());
    t
}

/// Where kvant and llama.cpp differ (text, add_special, kvant, llama.cpp).
fn differences(tok: &TextTokenizer, model: &Model, texts: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for add in [false, true] {
        for t in texts {
            let want: Vec<u32> = model
                .tokenize(t, add, false)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            let got = tok
                .encode(t, add)
                .unwrap_or_else(|e| panic!("encoding {t:?}: {e}"));
            if got != want {
                let short: String = t.chars().take(80).collect();
                bad.push(format!(
                    "{short:?} add_special={add}: kvant {got:?} llama.cpp {want:?}"
                ));
            }
        }
    }
    bad
}

fn converted(src: &str, dir: &Path) -> PathBuf {
    convert_to(&fixtures::path(src), FileType::F32, dir, None).0
}

fn kvant_tokenizer(gguf: &Path) -> TextTokenizer {
    let f = GgufFile::open(gguf).unwrap();
    TextTokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{}: {e}", gguf.display()))
}

/// kvant's ids equal llama.cpp's on every text, and the vocabulary facts
/// agree.
fn same_as_llama_cpp(src: &str) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = converted(src, dir.path());
    let model = Model::load(&gguf, true);
    let tok = kvant_tokenizer(&gguf);
    assert_eq!(tok.n_vocab(), model.n_vocab(), "{src}: n_vocab");
    let texts = texts();
    let bad = differences(&tok, &model, &texts);
    assert!(
        bad.is_empty(),
        "{src}: {} of {} encodings differ from llama.cpp:\n{}",
        bad.len(),
        2 * texts.len(),
        bad[..bad.len().min(8)].join("\n")
    );
    // The corpus is not trivially tokenized: real merges happened.
    let h = heldout();
    let ids = tok.encode(&h, false).unwrap();
    assert!(ids.len() * 2 < h.len(), "{src}: {} ids", ids.len());
    speed_ratio(src, &tok, &model, &h);
}

/// Prints kvant's encoding time over llama.cpp's on the corpus (no
/// assertion: timings are informative only).
fn speed_ratio(src: &str, tok: &TextTokenizer, model: &Model, text: &str) {
    const REPS: u32 = 5;
    let t0 = Instant::now();
    for _ in 0..REPS {
        std::hint::black_box(tok.encode(text, true).unwrap());
    }
    let ours = t0.elapsed();
    let t0 = Instant::now();
    for _ in 0..REPS {
        std::hint::black_box(model.tokenize(text, true, false));
    }
    let theirs = t0.elapsed();
    eprintln!(
        "{src}: kvant encode / llama_tokenize time on heldout.txt = {:.2}",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}

#[test]
fn nanogpt_byte_level_bpe_matches_llama_cpp() {
    same_as_llama_cpp("nanogpt-az/ckpt.pt");
}

#[test]
fn nanogpt_k256_matches_llama_cpp() {
    same_as_llama_cpp("nanogpt-k256/ckpt.pt");
}

#[test]
fn hf_gpt2_matches_llama_cpp() {
    same_as_llama_cpp("hf-gpt2-az");
}

#[test]
fn hf_llama_byte_level_matches_llama_cpp() {
    same_as_llama_cpp("hf-llama-az");
}

#[test]
fn llama3_bpe_matches_llama_cpp() {
    same_as_llama_cpp("hf-llama3-az");
}

#[test]
fn qwen2_bpe_matches_llama_cpp() {
    same_as_llama_cpp("hf-qwen2-az");
}

#[test]
fn qwen3_bpe_matches_llama_cpp() {
    same_as_llama_cpp("hf-qwen3-az");
}

#[test]
fn mistral_sentencepiece_matches_llama_cpp() {
    same_as_llama_cpp("hf-mistral-sp-az");
}

/// The same GGUF with `edit` applied to its metadata.
fn edited(src: &Path, out: PathBuf, edit: impl FnOnce(&mut kvant::gguf::Metadata)) -> PathBuf {
    let f = GgufFile::open(src).unwrap();
    let mut md = f.metadata.clone();
    edit(&mut md);
    let infos: Vec<TensorInfo> = f.tensors.iter().map(|t| t.info.clone()).collect();
    let mut w = GgufWriter::create(&out, &md, infos).unwrap();
    for t in &f.tensors {
        w.write_tensor(&t.info.name, f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
    out
}

/// Marks the ASCII-letter tokens of 3+ letters as user-defined, which
/// llama.cpp cuts out of the text before tokenizing (longest first).
fn with_user_defined(md: &mut kvant::gguf::Metadata) -> usize {
    let Some(GgufValue::Array(GgufArray::String(tokens))) =
        md.get("tokenizer.ggml.tokens").cloned()
    else {
        panic!("tokens")
    };
    let Some(GgufValue::Array(GgufArray::I32(mut types))) =
        md.get("tokenizer.ggml.token_type").cloned()
    else {
        panic!("token types")
    };
    let mut n = 0;
    for (i, t) in tokens.iter().enumerate() {
        if types[i] == 1 && t.len() >= 3 && t.bytes().all(|b| b.is_ascii_lowercase()) && n < 40 {
            types[i] = 4;
            n += 1;
        }
    }
    md.set(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(types)),
    );
    n
}

fn user_defined_tokens_are_cut_out(src: &str) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = converted(src, dir.path());
    let mut n = 0;
    let gguf = edited(&gguf, dir.path().join("user.gguf"), |md| {
        n = with_user_defined(md)
    });
    assert!(n >= 10, "{src}: only {n} tokens made user-defined");
    let model = Model::load(&gguf, true);
    let tok = kvant_tokenizer(&gguf);
    let texts = texts();
    let bad = differences(&tok, &model, &texts);
    assert!(
        bad.is_empty(),
        "{src} with user-defined tokens: {} differ:\n{}",
        bad.len(),
        bad[..bad.len().min(8)].join("\n")
    );
}

#[test]
fn user_defined_tokens_bpe() {
    user_defined_tokens_are_cut_out("hf-qwen2-az");
}

#[test]
fn user_defined_tokens_sentencepiece() {
    user_defined_tokens_are_cut_out("hf-mistral-sp-az");
}

#[test]
fn add_bos_and_eos_follow_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = converted("hf-gpt2-az", dir.path());
    let gguf = edited(&gguf, dir.path().join("eos.gguf"), |md| {
        md.set("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
        md.set("tokenizer.ggml.add_eos_token", GgufValue::Bool(true));
    });
    let model = Model::load(&gguf, true);
    let tok = kvant_tokenizer(&gguf);
    assert!(tok.adds_bos());
    let bad = differences(&tok, &model, &nasty());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let ids = tok.encode("Salam", true).unwrap();
    assert_eq!(ids.first().copied(), tok.bos());
    assert_eq!(ids.len(), model.tokenize("Salam", true, false).len());
}

#[test]
fn checkpoint_metadata_tokenizes_like_its_gguf() {
    // `kvant convert --calibration` on a checkpoint has only the metadata
    // the converter is about to write.
    for src in ["hf-qwen2-az", "hf-mistral-sp-az", "nanogpt-az"] {
        let dir = tempfile::tempdir().unwrap();
        let gguf = converted(src, dir.path());
        let from_file = kvant_tokenizer(&gguf);
        let files = discover(&fixtures::path(src));
        let vocab = gguf_vocab(&files, from_file.n_vocab()).unwrap();
        let from_md = TextTokenizer::from_metadata(&vocab.metadata).unwrap();
        let h = heldout();
        for add in [false, true] {
            assert_eq!(
                from_md.encode(&h, add).unwrap(),
                from_file.encode(&h, add).unwrap(),
                "{src}"
            );
        }
    }
}

#[test]
fn unsupported_pre_tokenizer_is_refused_with_the_file_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = converted("hf-gpt2-az", dir.path());
    let gguf = edited(&gguf, dir.path().join("falcon.gguf"), |md| {
        md.set("tokenizer.ggml.pre", "falcon")
    });
    let f = GgufFile::open(&gguf).unwrap();
    let err = match TextTokenizer::from_gguf(&f) {
        Err(e @ EncodeError::Unsupported { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("falcon's pre-tokenizer is not one kvant encodes"),
    };
    assert!(
        err.contains("falcon.gguf") && err.contains("\"falcon\""),
        "{err}"
    );
}

/// What numpy's `arr.astype(np.uint16).tofile(path)` writes on a
/// little-endian machine (nanoGPT's prepare.py).
fn write_u16s(path: &Path, ids: &[u16], extra: &[u8]) {
    let mut bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    bytes.extend_from_slice(extra);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn nanogpt_token_files_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("val.bin");
    write_u16s(&good, &[0, 1, 2047, 300, 65535 % 2048], &[]);
    assert_eq!(
        read_token_file(&good, 2048).unwrap(),
        vec![0, 1, 2047, 300, 65535 % 2048]
    );

    let odd = dir.path().join("odd.bin");
    write_u16s(&odd, &[5, 6, 7], &[1]);
    let e = read_token_file(&odd, 2048).unwrap_err().to_string();
    assert!(
        e.contains("odd.bin") && e.contains("offset 6") && e.contains("odd"),
        "{e}"
    );

    let big = dir.path().join("train.bin");
    write_u16s(&big, &[5, 6, 2048, 7], &[]);
    let e = read_token_file(&big, 2048).unwrap_err().to_string();
    assert!(
        e.contains("train.bin") && e.contains("offset 4") && e.contains("2048"),
        "{e}"
    );

    let empty = dir.path().join("empty.bin");
    write_u16s(&empty, &[], &[]);
    let e = read_token_file(&empty, 2048).unwrap_err().to_string();
    assert!(e.contains("empty.bin") && e.contains("empty"), "{e}");

    let missing = dir.path().join("missing.bin");
    let e = read_token_file(&missing, 2048).unwrap_err().to_string();
    assert!(e.contains("missing.bin"), "{e}");
}

#[test]
fn token_file_ids_decode_to_the_corpus() {
    // A val.bin made from llama.cpp's own ids of the corpus reads back as
    // exactly those ids.
    let dir = tempfile::tempdir().unwrap();
    let gguf = converted("nanogpt-az/ckpt.pt", dir.path());
    let model = Model::load(&gguf, true);
    let h = heldout();
    let ids: Vec<u16> = model
        .tokenize(&h, false, false)
        .iter()
        .map(|&i| i as u16)
        .collect();
    let bin = dir.path().join("val.bin");
    write_u16s(&bin, &ids, &[]);
    let read = read_token_file(&bin, model.n_vocab()).unwrap();
    let as_i32: Vec<i32> = read.iter().map(|&i| i as i32).collect();
    assert_eq!(model.detokenize(&as_i32), h);
}
