#!/usr/bin/env python3
"""Merge memory check for issue 12 (LoRA adapters).

Writes, with the standard library only, a 124M-parameter Hugging Face GPT-2
(n_layer 12, n_embd 768, vocab 50304, ctx 1024; the bench's model shape) and
a rank-8 PEFT LoRA on every c_attn/c_proj/c_fc of it, under OUT (default
/tmp/lora-mem). Then compare peak RSS of a plain conversion and of the merge:

    /usr/bin/time -v kvant convert OUT/base -t f16 -o base.gguf
    /usr/bin/time -v kvant convert OUT/ft   -t f16 -o ft.gguf

The merge must peak at no more than the plain conversion plus the adapter.
"""
import json, os, random, shutil, struct, sys
FIXTURES = os.environ.get('KVANT_FIXTURES', os.path.join(os.path.dirname(__file__), '../../shared/fixtures'))
out = sys.argv[1] if len(sys.argv) > 1 else '/tmp/lora-mem'
L, C, V, T = 12, 768, 50304, 1024
def tensors():
    yield 'transformer.wte.weight', [V, C]
    yield 'transformer.wpe.weight', [T, C]
    for l in range(L):
        p = f'transformer.h.{l}.'
        for n, s in [('ln_1.weight',[C]),('ln_1.bias',[C]),('attn.c_attn.weight',[C,3*C]),('attn.c_attn.bias',[3*C]),
                     ('attn.c_proj.weight',[C,C]),('attn.c_proj.bias',[C]),('ln_2.weight',[C]),('ln_2.bias',[C]),
                     ('mlp.c_fc.weight',[C,4*C]),('mlp.c_fc.bias',[4*C]),('mlp.c_proj.weight',[4*C,C]),('mlp.c_proj.bias',[C])]:
            yield p+n, s
    yield 'transformer.ln_f.weight', [C]
    yield 'transformer.ln_f.bias', [C]
def write(path, items, fill):
    header, off = {}, 0
    for n, s in items:
        k = 1
        for d in s: k *= d
        header[n] = {'dtype':'F32','shape':s,'data_offsets':[off, off+4*k]}; off += 4*k
    h = json.dumps(header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for n, s in items:
            k = 1
            for d in s: k *= d
            f.write(fill(n, k))
base = os.path.join(out, 'base'); os.makedirs(base, exist_ok=True)
ones = struct.pack('<f', 0.01)
write(os.path.join(base, 'model.safetensors'), list(tensors()), lambda n, k: ones * k)
cfg = json.load(open(os.path.join(FIXTURES, 'hf-gpt2-az/config.json')))
cfg.update(n_embd=C, n_head=12, n_layer=L, n_positions=T, vocab_size=V)
json.dump(cfg, open(os.path.join(base, 'config.json'), 'w'))
shutil.copy(os.path.join(FIXTURES, 'hf-gpt2-az/tokenizer.json'), base)
shutil.copy(os.path.join(FIXTURES, 'hf-gpt2-az/tokenizer_config.json'), base)
ad = os.path.join(out, 'ft'); os.makedirs(ad, exist_ok=True)
items = []
r = 8
for l in range(L):
    for m, i, o in [('attn.c_attn', C, 3*C), ('attn.c_proj', C, C), ('mlp.c_fc', C, 4*C), ('mlp.c_proj', 4*C, C)]:
        p = f'base_model.model.transformer.h.{l}.{m}.'
        items += [(p+'lora_A.weight', [r, i]), (p+'lora_B.weight', [o, r])]
rnd = random.Random(1)
write(os.path.join(ad, 'adapter_model.safetensors'), items,
      lambda n, k: struct.pack(f'<{k}f', *[rnd.uniform(-0.01, 0.01) for _ in range(k)]))
json.dump({'peft_type':'LORA','r':r,'lora_alpha':16,'fan_in_fan_out':True,'base_model_name_or_path':'../base',
           'target_modules':['c_attn','c_proj','c_fc']}, open(os.path.join(ad, 'adapter_config.json'), 'w'))
