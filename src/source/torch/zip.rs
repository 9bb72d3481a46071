//! The zip container of `torch.save` (PyTorch ≥ 1.6): a directory of
//! stored (uncompressed) entries, read straight from the memory map.
//!
//! Only what torch writes is accepted: stored entries, one top folder,
//! plain relative names. Every offset and size is checked against the file
//! before use, so a truncated or hostile archive is an error, never a read
//! out of bounds. ZIP64 records (archives over 4 GiB) are understood.

use std::path::Path;

use crate::source::SourceError;

/// One stored entry: its name and where its bytes are in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full name inside the archive, e.g. `ckpt/data/0`.
    pub name: String,
    /// Byte offset of the entry's data in the file.
    pub offset: usize,
    /// Data length in bytes.
    pub size: usize,
}

/// More entries than any checkpoint has; a larger count is a lie.
const MAX_ENTRIES: u64 = 10_000_000;

fn bad(path: &Path, reason: impl Into<String>) -> SourceError {
    SourceError::Malformed {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// True when `b` starts like a zip archive.
pub fn is_zip(b: &[u8]) -> bool {
    b.starts_with(b"PK\x03\x04")
}

/// Reads the central directory of the archive in `b`.
pub fn entries(b: &[u8], path: &Path) -> Result<Vec<Entry>, SourceError> {
    let truncated = || {
        bad(
            path,
            "truncated or damaged archive: no end-of-central-directory record (was the file cut short?)",
        )
    };
    if b.len() < 22 {
        return Err(truncated());
    }
    // The EOCD record is at the end, followed by at most a 64 KiB comment.
    let lowest = b.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..=b.len() - 22)
        .rev()
        .find(|&i| u32_at(b, i) == Some(0x0605_4b50))
        .ok_or_else(truncated)?;
    let mut count = u64::from(u16_at(b, eocd + 10).ok_or_else(truncated)?);
    let mut cd_size = u64::from(u32_at(b, eocd + 12).ok_or_else(truncated)?);
    let mut cd_offset = u64::from(u32_at(b, eocd + 16).ok_or_else(truncated)?);
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // ZIP64: the locator sits just before the EOCD.
        let loc = eocd.checked_sub(20).ok_or_else(truncated)?;
        if u32_at(b, loc) != Some(0x0706_4b50) {
            return Err(bad(path, "ZIP64 locator missing"));
        }
        let rec = u64_at(b, loc + 8).ok_or_else(truncated)? as usize;
        if u32_at(b, rec) != Some(0x0606_4b50) {
            return Err(bad(path, "ZIP64 end-of-central-directory record missing"));
        }
        count = u64_at(b, rec + 32).ok_or_else(truncated)?;
        cd_size = u64_at(b, rec + 40).ok_or_else(truncated)?;
        cd_offset = u64_at(b, rec + 48).ok_or_else(truncated)?;
    }
    let cd_end = cd_offset
        .checked_add(cd_size)
        .filter(|&e| e <= b.len() as u64)
        .ok_or_else(|| bad(path, "central directory lies beyond the end of the file"))?;
    if count > MAX_ENTRIES || count.saturating_mul(46) > cd_size {
        return Err(bad(path, format!("implausible entry count {count}")));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut at = cd_offset as usize;
    for i in 0..count {
        let hdr = |o: usize| at.checked_add(o).filter(|&x| (x as u64) < cd_end);
        let field = |o: usize| {
            hdr(o).ok_or_else(|| bad(path, format!("central directory entry {i} is cut short")))
        };
        if u32_at(b, at) != Some(0x0201_4b50) {
            return Err(bad(
                path,
                format!("central directory entry {i} has a bad signature"),
            ));
        }
        let method = u16_at(b, field(10)?).ok_or_else(truncated)?;
        let mut comp = u64::from(u32_at(b, field(20)?).ok_or_else(truncated)?);
        let mut size = u64::from(u32_at(b, field(24)?).ok_or_else(truncated)?);
        let name_len = usize::from(u16_at(b, field(28)?).ok_or_else(truncated)?);
        let extra_len = usize::from(u16_at(b, field(30)?).ok_or_else(truncated)?);
        let comment_len = usize::from(u16_at(b, field(32)?).ok_or_else(truncated)?);
        let mut local = u64::from(u32_at(b, field(42)?).ok_or_else(truncated)?);
        let name_start = at + 46;
        let name_bytes = b
            .get(name_start..name_start + name_len)
            .filter(|_| (name_start + name_len) as u64 <= cd_end)
            .ok_or_else(|| bad(path, format!("central directory entry {i}: name cut short")))?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| bad(path, format!("entry {i} has a name that is not UTF-8")))?
            .to_owned();
        // ZIP64 extra field: the 0xFFFFFFFF fields, in order.
        let extra = b
            .get(name_start + name_len..name_start + name_len + extra_len)
            .ok_or_else(|| bad(path, format!("entry '{name}': extra field cut short")))?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = usize::from(u16_at(extra, e + 2).unwrap_or(0));
            if id == 1 {
                let mut p = e + 4;
                for v in [&mut size, &mut comp, &mut local] {
                    if *v == 0xFFFF_FFFF {
                        *v = u64_at(extra, p).ok_or_else(|| {
                            bad(path, format!("entry '{name}': ZIP64 field cut short"))
                        })?;
                        p += 8;
                    }
                }
            }
            e += 4 + len;
        }
        check_name(&name, path)?;
        if method != 0 {
            return Err(bad(
                path,
                format!("entry '{name}' is compressed (method {method}); torch.save stores entries uncompressed"),
            ));
        }
        if comp != size {
            return Err(bad(path, format!("entry '{name}': stored sizes disagree")));
        }
        let local = local as usize;
        if u32_at(b, local) != Some(0x0403_4b50) {
            return Err(bad(
                path,
                format!("entry '{name}': local header missing (truncated file?)"),
            ));
        }
        let n = usize::from(u16_at(b, local + 26).ok_or_else(truncated)?);
        let m = usize::from(u16_at(b, local + 28).ok_or_else(truncated)?);
        let offset = local + 30 + n + m;
        let end = (offset as u64)
            .checked_add(size)
            .filter(|&e| e <= b.len() as u64);
        if end.is_none() {
            return Err(bad(
                path,
                format!("entry '{name}' ({size} bytes) runs past the end of the file (truncated?)"),
            ));
        }
        out.push(Entry {
            name,
            offset,
            size: size as usize,
        });
        at = name_start + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// Refuses names that could point outside an extraction folder: torch
/// never writes them, so an archive holding one was made to attack.
fn check_name(name: &str, path: &Path) -> Result<(), SourceError> {
    let evil = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.split('/').any(|part| part == "..")
        || name.as_bytes().get(1) == Some(&b':');
    if evil {
        return Err(SourceError::Unsupported {
            path: path.to_owned(),
            reason: format!("refused: archive entry name '{name}' escapes its folder (path traversal); not a torch.save file"),
        });
    }
    Ok(())
}
