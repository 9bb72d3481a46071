//! A requested output type: a mix by name, or `auto` (the smallest
//! standard mix within the quality budget, chosen by measuring).

use std::fmt;
use std::str::FromStr;

use crate::quant::FileType;

/// What `auto` becomes when there is no held-out text to measure on: the
/// mix most users pick by hand.
pub const DEFAULT_AUTO_FALLBACK: FileType = FileType::Q4_K_M;

/// One entry of `types = [...]` or `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeChoice {
    /// Chosen by measuring ([`crate::quality::AutoSearch`]).
    Auto,
    /// This mix.
    Type(FileType),
}

impl TypeChoice {
    /// The fixed mixes of `choices`, and whether `auto` is among them.
    pub fn split(choices: &[TypeChoice]) -> (Vec<FileType>, bool) {
        let mut fixed = Vec::new();
        let mut auto = false;
        for c in choices {
            match c {
                TypeChoice::Auto => auto = true,
                TypeChoice::Type(t) if !fixed.contains(t) => fixed.push(*t),
                TypeChoice::Type(_) => {}
            }
        }
        (fixed, auto)
    }
}

impl TypeChoice {
    /// The mixes to write when nothing is measured: the named ones, and
    /// `auto` as [`DEFAULT_AUTO_FALLBACK`].
    pub fn unmeasured(choices: &[TypeChoice]) -> Vec<FileType> {
        let (mut fixed, auto) = TypeChoice::split(choices);
        if auto && !fixed.contains(&DEFAULT_AUTO_FALLBACK) {
            fixed.push(DEFAULT_AUTO_FALLBACK);
        }
        fixed
    }
}

impl FromStr for TypeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(TypeChoice::Auto);
        }
        s.parse::<FileType>()
            .map(TypeChoice::Type)
            .map_err(|e| format!("{e}, or auto"))
    }
}

impl fmt::Display for TypeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeChoice::Auto => f.write_str("auto"),
            TypeChoice::Type(t) => f.write_str(&t.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_mixes_parse_and_split() {
        let c: Vec<TypeChoice> = ["q8_0", "AUTO", "q8_0", "q2_k"]
            .iter()
            .map(|s| s.parse().expect("parses"))
            .collect();
        let (fixed, auto) = TypeChoice::split(&c);
        assert!(auto);
        assert_eq!(fixed, vec![FileType::Q8_0, FileType::Q2_K]);
        let err = "q9".parse::<TypeChoice>().expect_err("not a type");
        assert!(err.contains("or auto"), "{err}");
        assert_eq!(TypeChoice::Auto.to_string(), "auto");
        assert_eq!(
            TypeChoice::unmeasured(&c),
            vec![FileType::Q8_0, FileType::Q2_K, DEFAULT_AUTO_FALLBACK]
        );
    }
}
