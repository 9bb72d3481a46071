//! Structured mutation: byte-level damage concentrated where formats keep
//! their structure (the first and last 64 KiB), integers that are lengths
//! and counts, the target's own tokens, and chunks repeated thousands of
//! times — which is how deep nesting is made.

/// A small fast generator (xorshift64*), seeded per worker.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (never zero inside).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000,
    u64::MAX,
    i64::MAX as u64,
];

/// How much a mutation may grow an input.
const MAX_GROWTH: usize = 4 << 20;

/// An offset into `len` bytes, favouring the first and last 64 KiB.
fn offset(rng: &mut Rng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let window = len.min(64 << 10);
    match rng.below(4) {
        0 | 1 => rng.below(window),
        2 => len - 1 - rng.below(window),
        _ => rng.below(len),
    }
}

/// A repeat count: usually small, sometimes enough to nest past any limit.
fn repeats(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 1_000 + rng.below(200_000),
        1 | 2 => 64 + rng.below(1_000),
        _ => 2 + rng.below(16),
    }
}

/// One mutant of `input`; `other` is another corpus entry to splice from.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut b = input.to_vec();
    let limit = input.len() + MAX_GROWTH;
    let ops = if rng.below(4) == 0 {
        1 + rng.below(16)
    } else {
        1 + rng.below(3)
    };
    for _ in 0..ops {
        let at = offset(rng, b.len());
        match rng.below(11) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 if !b.is_empty() => b[at] = INTERESTING[rng.below(5)] as u8,
            2 => {
                let width = [2, 4, 8][rng.below(3)];
                let v = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.next() >> rng.below(64)
                };
                let bytes = v.to_le_bytes();
                for (i, &x) in bytes[..width].iter().enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = x;
                    }
                }
            }
            3 if !b.is_empty() => b[at] = b[at].wrapping_add(rng.below(33) as u8).wrapping_sub(16),
            4 => {
                let most = if rng.below(4) == 0 { 4096 } else { 64 };
                let len = 1 + rng.below(most);
                let end = (at + len).min(b.len());
                b.drain(at..end);
            }
            5 => {
                let chunk: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                b.splice(at..at, chunk);
            }
            6 | 7 if !b.is_empty() => {
                // Repeat a short chunk of the input: nesting, long lists.
                let src = offset(rng, b.len());
                let len = (1 + rng.below(8)).min(b.len() - src);
                let chunk = b[src..src + len].to_vec();
                let n = if rng.below(2) == 0 { repeats(rng) } else { 1 };
                let rep: Vec<u8> = chunk.iter().copied().cycle().take(len * n).collect();
                b.splice(at..at, rep);
            }
            8 if !dict.is_empty() => {
                let token = dict[rng.below(dict.len())];
                let n = if rng.below(3) == 0 { repeats(rng) } else { 1 };
                let rep: Vec<u8> = token
                    .iter()
                    .copied()
                    .cycle()
                    .take(token.len() * n)
                    .collect();
                b.splice(at..at, rep);
            }
            9 if !other.is_empty() => {
                let src = offset(rng, other.len());
                let len = (1 + rng.below(4096)).min(other.len() - src);
                let chunk = &other[src..src + len];
                if rng.below(2) == 0 {
                    b.splice(at..at, chunk.iter().copied());
                } else {
                    let end = (at + len).min(b.len());
                    b.splice(at..end, chunk.iter().copied());
                }
            }
            10 => b.truncate(at),
            _ => {}
        }
        b.truncate(limit);
    }
    b
}
