//! Writes a nanoGPT-shaped `torch.save` checkpoint (zip + pickle protocol
//! 2), the way PyTorch lays it out: `<name>/data.pkl`, `byteorder`,
//! `data/<key>` storages stored uncompressed at 64-byte aligned offsets,
//! `version`. Used only by the benchmark, to have a ~100M-parameter input
//! without PyTorch on the machine; tests use the real fixtures instead.

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::Path;

/// A tensor to save: name, shape, and a generator filling its elements.
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
    /// Storage key this tensor views (tied weights share one).
    pub key: usize,
}

fn crc32_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, slot) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    t
}

struct Crc(u32, [u32; 256]);

impl Crc {
    fn new() -> Crc {
        Crc(0xFFFF_FFFF, crc32_table())
    }
    fn update(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = self.1[((self.0 ^ x as u32) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }
    fn finish(&self) -> u32 {
        !self.0
    }
}

struct Entry {
    name: String,
    offset: u64,
    size: u64,
    crc: u32,
}

struct Zip {
    out: BufWriter<File>,
    pos: u64,
    entries: Vec<Entry>,
}

impl Zip {
    fn start_entry(&mut self, name: &str, size: u64, crc: u32) -> io::Result<()> {
        // Pad the local header's extra field so the data starts 64-aligned,
        // as PyTorch's writer does.
        let header_len = 30 + name.len() as u64;
        let mut extra = (64 - (self.pos + header_len + 4) % 64) % 64;
        extra += 4;
        let offset = self.pos;
        let mut h = Vec::new();
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // version needed
        h.extend_from_slice(&0u16.to_le_bytes()); // flags
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&0u32.to_le_bytes()); // time/date
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&(size as u32).to_le_bytes());
        h.extend_from_slice(&(size as u32).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(b"FB");
        h.extend_from_slice(&((extra - 4) as u16).to_le_bytes());
        h.resize(h.len() + (extra - 4) as usize, b'Z');
        self.out.write_all(&h)?;
        self.pos += h.len() as u64;
        self.entries.push(Entry {
            name: name.to_owned(),
            offset,
            size,
            crc,
        });
        Ok(())
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn entry(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut c = Crc::new();
        c.update(data);
        self.start_entry(name, data.len() as u64, c.finish())?;
        self.write(data)
    }

    fn finish(mut self) -> io::Result<()> {
        let cd_start = self.pos;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let mut h = Vec::new();
            h.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&(e.size as u32).to_le_bytes());
            h.extend_from_slice(&(e.size as u32).to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            h.extend_from_slice(&0u16.to_le_bytes()); // comment
            h.extend_from_slice(&0u16.to_le_bytes()); // disk
            h.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
            h.extend_from_slice(&0u32.to_le_bytes()); // external attrs
            h.extend_from_slice(&(e.offset as u32).to_le_bytes());
            h.extend_from_slice(e.name.as_bytes());
            self.write(&h)?;
        }
        let cd_size = self.pos - cd_start;
        let mut h = Vec::new();
        h.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        h.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        h.extend_from_slice(&(cd_size as u32).to_le_bytes());
        h.extend_from_slice(&(cd_start as u32).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        self.write(&h)?;
        self.out.flush()?;
        let _ = self.out.seek(io::SeekFrom::Current(0))?;
        Ok(())
    }
}

/// Pickle protocol 2 for `{'model': OrderedDict(tensors), 'model_args':
/// {...}, 'iter_num': N}`.
fn pickle(specs: &[Spec], model_args: &[(&str, i64)], iter_num: i64) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}'];
    let unicode = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: i64| {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    let global = |p: &mut Vec<u8>, m: &str, n: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{m}\n{n}\n").as_bytes());
    };
    let ordered_dict = |p: &mut Vec<u8>| {
        global(p, "collections", "OrderedDict");
        p.push(b')');
        p.push(b'R');
    };
    unicode(&mut p, "model");
    ordered_dict(&mut p);
    for s in specs {
        unicode(&mut p, &s.name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(b'(');
        // persistent id ('storage', FloatStorage, key, 'cpu', numel)
        p.push(b'(');
        unicode(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        unicode(&mut p, &s.key.to_string());
        unicode(&mut p, "cpu");
        int(&mut p, s.shape.iter().product::<usize>() as i64);
        p.push(b't');
        p.push(b'Q');
        int(&mut p, 0);
        p.push(b'(');
        for &d in &s.shape {
            int(&mut p, d as i64);
        }
        p.push(b't');
        p.push(b'(');
        let mut stride = 1usize;
        let mut strides = vec![0usize; s.shape.len()];
        for i in (0..s.shape.len()).rev() {
            strides[i] = stride;
            stride *= s.shape[i];
        }
        for st in strides {
            int(&mut p, st as i64);
        }
        p.push(b't');
        p.push(0x89); // NEWFALSE: requires_grad
        ordered_dict(&mut p);
        p.push(b't');
        p.push(b'R');
        p.push(b's');
    }
    p.push(b's');
    unicode(&mut p, "model_args");
    p.push(b'}');
    for (k, v) in model_args {
        unicode(&mut p, k);
        if *k == "bias" {
            p.push(if *v != 0 { 0x88 } else { 0x89 });
        } else {
            int(&mut p, *v);
        }
        p.push(b's');
    }
    p.push(b's');
    unicode(&mut p, "iter_num");
    int(&mut p, iter_num);
    p.push(b's');
    p.push(b'.');
    p
}

/// Writes the checkpoint. `fill(key, buf)` fills storage `key`'s f32
/// elements; storages are written one at a time, so memory stays at one
/// tensor.
pub fn write(
    path: &Path,
    specs: &[Spec],
    model_args: &[(&str, i64)],
    mut fill: impl FnMut(usize, &mut [f32]),
) -> io::Result<()> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let mut zip = Zip {
        out: BufWriter::with_capacity(1 << 20, File::create(path)?),
        pos: 0,
        entries: Vec::new(),
    };
    zip.entry(
        &format!("{stem}/data.pkl"),
        &pickle(specs, model_args, 5000),
    )?;
    zip.entry(&format!("{stem}/byteorder"), b"little")?;
    let mut done = std::collections::BTreeSet::new();
    for s in specs {
        if !done.insert(s.key) {
            continue;
        }
        let n: usize = s.shape.iter().product();
        let mut buf = vec![0f32; n];
        fill(s.key, &mut buf);
        let bytes: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
        zip.entry(&format!("{stem}/data/{}", s.key), &bytes)?;
    }
    zip.entry(&format!("{stem}/version"), b"3\n")?;
    zip.finish()
}

/// The tensors of a nanoGPT model with tied embeddings and biases.
pub fn nanogpt_specs(n_layer: usize, n_embd: usize, vocab: usize, block: usize) -> Vec<Spec> {
    let mut specs = Vec::new();
    let mut key = 0usize;
    let mut push = |specs: &mut Vec<Spec>, name: String, shape: Vec<usize>| {
        specs.push(Spec { name, shape, key });
        key += 1;
    };
    push(
        &mut specs,
        "transformer.wte.weight".into(),
        vec![vocab, n_embd],
    );
    push(
        &mut specs,
        "transformer.wpe.weight".into(),
        vec![block, n_embd],
    );
    for l in 0..n_layer {
        let h = |s: &str| format!("transformer.h.{l}.{s}");
        push(&mut specs, h("ln_1.weight"), vec![n_embd]);
        push(&mut specs, h("ln_1.bias"), vec![n_embd]);
        push(
            &mut specs,
            h("attn.c_attn.weight"),
            vec![3 * n_embd, n_embd],
        );
        push(&mut specs, h("attn.c_attn.bias"), vec![3 * n_embd]);
        push(&mut specs, h("attn.c_proj.weight"), vec![n_embd, n_embd]);
        push(&mut specs, h("attn.c_proj.bias"), vec![n_embd]);
        push(&mut specs, h("ln_2.weight"), vec![n_embd]);
        push(&mut specs, h("ln_2.bias"), vec![n_embd]);
        push(&mut specs, h("mlp.c_fc.weight"), vec![4 * n_embd, n_embd]);
        push(&mut specs, h("mlp.c_fc.bias"), vec![4 * n_embd]);
        push(&mut specs, h("mlp.c_proj.weight"), vec![n_embd, 4 * n_embd]);
        push(&mut specs, h("mlp.c_proj.bias"), vec![n_embd]);
    }
    push(&mut specs, "transformer.ln_f.weight".into(), vec![n_embd]);
    push(&mut specs, "transformer.ln_f.bias".into(), vec![n_embd]);
    // lm_head shares wte's storage (key 0), as nanoGPT's weight tying does.
    specs.push(Spec {
        name: "lm_head.weight".into(),
        shape: vec![vocab, n_embd],
        key: 0,
    });
    specs
}
