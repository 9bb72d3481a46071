//! File types: the quantization "mixes" a user asks for (`q4_k_m`), each a
//! default tensor type plus llama.cpp's per-tensor rules (see `policy`).
//! Values are llama.cpp's `enum llama_ftype`, stored as
//! `general.file_type`.

use std::fmt;
use std::str::FromStr;

use super::GgmlType;

/// A llama.cpp file type (`llama_ftype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[allow(missing_docs, non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    /// Every supported file type.
    pub const ALL: [FileType; 17] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
    ];

    /// llama.cpp's `llama_ftype` value (`general.file_type`).
    pub const fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The file type whose `llama_ftype` is `value` (a `general.file_type`
    /// read from a GGUF), or `None` for mixes kvant does not write.
    pub fn from_llama_ftype(value: u32) -> Option<FileType> {
        FileType::ALL.into_iter().find(|t| t.llama_ftype() == value)
    }

    /// The type most tensors get (`llama_ftype_get_default_type`).
    pub const fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q2_K => GgmlType::Q2K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => GgmlType::Q3K,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5K,
            FileType::Q6_K => GgmlType::Q6K,
        }
    }

    /// The lower-case name users type and files are named with (`q4_k_m`).
    pub fn name(self) -> String {
        format!("{self:?}").to_ascii_lowercase()
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl FromStr for FileType {
    type Err = String;

    /// Parses `q4_k_m`, `Q4_K_M`, `f16` and so on.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        FileType::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| {
                let names: Vec<String> = FileType::ALL.iter().map(|t| t.name()).collect();
                format!("unknown type '{s}' (one of: {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_ftype_values_round_trip() {
        for t in FileType::ALL {
            assert_eq!(FileType::from_llama_ftype(t.llama_ftype()), Some(t));
        }
        // MOSTLY_Q4_1_SOME_F16 (4) and IQ2_XXS (19) are not kvant mixes
        assert_eq!(FileType::from_llama_ftype(4), None);
        assert_eq!(FileType::from_llama_ftype(19), None);
    }
}
