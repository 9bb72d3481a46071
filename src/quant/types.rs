//! The ggml tensor types kvant reads and writes, with ggml's ids and block
//! geometry (`ggml.h`, `ggml.c` `type_traits`).
//!
//! An id read from a file is matched explicitly: an unknown id is an error,
//! never a guess.

use std::fmt;
use std::str::FromStr;

/// A ggml tensor element type, as stored in a GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, 32 per block, scale only.
    Q4_0,
    /// 4-bit, 32 per block, scale and minimum.
    Q4_1,
    /// 5-bit, 32 per block, scale only.
    Q5_0,
    /// 5-bit, 32 per block, scale and minimum.
    Q5_1,
    /// 8-bit, 32 per block, scale only.
    Q8_0,
    /// 2-bit K-quant, 256 per super-block.
    Q2K,
    /// 3-bit K-quant.
    Q3K,
    /// 4-bit K-quant.
    Q4K,
    /// 5-bit K-quant.
    Q5K,
    /// 6-bit K-quant.
    Q6K,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// bfloat16.
    BF16,
    /// 8-bit, 32 per block, scale and scaled sum: the activation partner
    /// of Q4_1/Q5_1 in ggml-cpu's dot products, never a file's weights.
    Q8_1,
    /// 8-bit, 256 per block, f32 scale and 16-element sums: the activation
    /// partner of the K-quants, never a file's weights.
    Q8K,
}

impl GgmlType {
    /// Every type kvant knows, in id order.
    pub const ALL: [GgmlType; 18] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::BF16,
    ];

    /// The activation-only types, kept out of [`GgmlType::ALL`] so that
    /// [`GgmlType::from_id`] (and so the GGUF reader) still refuses them as
    /// tensor types: ggml-cpu creates them only inside a matrix product.
    pub const ACTIVATION: [GgmlType; 2] = [GgmlType::Q8_1, GgmlType::Q8K];

    /// ggml's numeric id (`enum ggml_type`).
    pub const fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
            GgmlType::Q8_1 => 9,
            GgmlType::Q8K => 15,
        }
    }

    /// The type with ggml id `id`, or `None` for ids kvant does not handle.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Elements per block (1 for plain element types).
    pub const fn block_size(self) -> usize {
        match self {
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1 => 32,
            GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Q8K => 256,
            _ => 1,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
            GgmlType::I8 => 1,
            GgmlType::I16 => 2,
            GgmlType::I32 => 4,
            GgmlType::I64 => 8,
            GgmlType::F64 => 8,
            GgmlType::BF16 => 2,
            GgmlType::Q8_1 => 36,
            GgmlType::Q8K => 292,
        }
    }

    /// True for block-quantized types (those `ggml_is_quantized` reports).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of one row of `n_per_row` elements, or `None` when the row
    /// length is not a multiple of the block size.
    pub fn row_size(self, n_per_row: usize) -> Option<usize> {
        if !n_per_row.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_per_row / self.block_size()).checked_mul(self.type_size())
    }

    /// Bits per weight of this type (for reports).
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// ggml's name for the type (`ggml_type_name`), e.g. `q4_K`.
    pub const fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q2K => "q2_K",
            GgmlType::Q3K => "q3_K",
            GgmlType::Q4K => "q4_K",
            GgmlType::Q5K => "q5_K",
            GgmlType::Q6K => "q6_K",
            GgmlType::I8 => "i8",
            GgmlType::I16 => "i16",
            GgmlType::I32 => "i32",
            GgmlType::I64 => "i64",
            GgmlType::F64 => "f64",
            GgmlType::BF16 => "bf16",
            GgmlType::Q8_1 => "q8_1",
            GgmlType::Q8K => "q8_K",
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name().to_uppercase())
    }
}

impl FromStr for GgmlType {
    type Err = String;

    /// Parses a type name case-insensitively (`q4_k`, `Q8_0`, `f16`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name().to_ascii_lowercase() == lower)
            .ok_or_else(|| format!("unknown ggml type '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_refused() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(99), None);
        // The activation partners are not tensor types kvant reads.
        assert_eq!(GgmlType::from_id(GgmlType::Q8_1.id()), None);
        assert_eq!(GgmlType::from_id(GgmlType::Q8K.id()), None);
    }

    #[test]
    fn row_sizes_follow_block_geometry() {
        assert_eq!(GgmlType::Q8_0.row_size(128), Some(4 * 34));
        assert_eq!(GgmlType::Q4K.row_size(128), None);
        assert_eq!(GgmlType::F16.row_size(3), Some(6));
        assert_eq!(GgmlType::Q8_1.row_size(64), Some(2 * 36));
        assert_eq!(GgmlType::Q8K.row_size(512), Some(2 * 292));
    }
}
