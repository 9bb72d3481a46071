//! The legacy (non-zip) `torch.save` format: what every PyTorch before 1.6
//! wrote, and what `_use_new_zipfile_serialization=False` still writes.
//!
//! The file is a stream, read straight from the memory map:
//!
//! ```text
//! pickle   MAGIC_NUMBER 0x1950a86a20f9469cfc6c      (an int, LONG1)
//! pickle   PROTOCOL_VERSION 1001
//! pickle   sys_info {protocol_version, little_endian, type_sizes}
//! pickle   the object (a state dict, nanoGPT's dict, …); each storage is
//!          a persistent id ('storage', type, key, location, numel, view)
//! pickle   the storage keys, a list of str, in the order their data follows
//! per key  i64 element count (little-endian), then count × element-size
//!          raw bytes
//! ```
//!
//! The object goes through the same allowlisted interpreter and limits as
//! a zip archive's `data.pkl`; its storages' sizes are checked once the
//! data section has been walked (the data comes after the pickle), and
//! tensors are views into the map, so nothing is copied. Keys are pointer
//! values (`"94382460307216"`), not `0, 1, …`.

use std::sync::Arc;

use memmap2::Mmap;

use super::pickle::{unpickle_prefix, Unpickled, Value};
use super::{checkpoint, pickle_error, Storages};
use crate::source::{Checkpoint, SourceError, SourceFormat};
use std::path::Path;

/// `torch.serialization.MAGIC_NUMBER`, little-endian, as LONG1 stores it.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// `torch.serialization.PROTOCOL_VERSION`.
const PROTOCOL_VERSION: i64 = 1001;

/// Length of the magic-number pickle at the front of `b`, if it is one:
/// `PROTO n` (and a protocol-4 `FRAME`), `LONG1 10 <magic>`, `STOP`.
fn magic_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    if b.first() == Some(&0x80) {
        at = 2;
        if b.get(at) == Some(&0x95) {
            at += 9;
        }
    }
    let rest = b.get(at..at + 13)?;
    (rest[..2] == [0x8a, 10] && rest[2..12] == MAGIC && rest[12] == b'.').then_some(at + 13)
}

/// True when `b` starts like a legacy `torch.save` file.
pub fn is_legacy(b: &[u8]) -> bool {
    magic_len(b).is_some()
}

fn bad(path: &Path, reason: impl Into<String>) -> SourceError {
    SourceError::Malformed {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads the legacy checkpoint mapped in `map`.
pub fn open(path: &Path, map: Arc<Mmap>) -> Result<Checkpoint, SourceError> {
    let mut at = magic_len(&map).ok_or_else(|| bad(path, "no torch magic number"))?;
    let mut next = |part: &str| -> Result<Unpickled, SourceError> {
        let u = unpickle_prefix(&map[at..], None).map_err(|e| pickle_error(path, part, e))?;
        at += u.len;
        Ok(u)
    };
    match next("protocol version")?.value {
        Value::Int(PROTOCOL_VERSION) => {}
        _ => return Err(bad(path, "unknown legacy protocol version (expected 1001)")),
    }
    check_sys_info(path, &next("sys_info")?.value)?;
    let object = next("the pickled object")?;
    let keys = next("the storage keys")?.value;
    let storages = walk_storages(path, &map, at, &keys, &object)?;
    checkpoint(
        path,
        &map,
        &object.value,
        &storages,
        SourceFormat::TorchLegacy,
    )
}

/// The object pickle of a legacy file (a fuzz seed).
#[cfg(feature = "fuzz")]
pub(crate) fn object_pickle(b: &[u8]) -> Option<Vec<u8>> {
    let mut at = magic_len(b)?;
    for _ in 0..2 {
        at += unpickle_prefix(&b[at..], None).ok()?.len;
    }
    let len = unpickle_prefix(&b[at..], None).ok()?.len;
    Some(b[at..at + len].to_vec())
}

/// Refuses a big-endian file: its storages' bytes would all be swapped.
fn check_sys_info(path: &Path, info: &Value) -> Result<(), SourceError> {
    let Value::Dict(d) = info else {
        return Err(bad(path, "sys_info is not a dict"));
    };
    let little = d
        .borrow()
        .iter()
        .find(|(k, _)| k.as_str() == Some("little_endian"))
        .map(|(_, v)| matches!(v, Value::Bool(true)));
    match little {
        Some(true) => Ok(()),
        Some(false) => Err(SourceError::Unsupported {
            path: path.to_owned(),
            reason: "big-endian checkpoints are not supported".into(),
        }),
        None => Err(bad(path, "sys_info does not say the byte order")),
    }
}

/// Walks the data section from `at`: one element count and the raw bytes
/// per key, in the order `keys` lists them, each checked against the
/// storage the object's persistent ids described.
fn walk_storages(
    path: &Path,
    map: &[u8],
    mut at: usize,
    keys: &Value,
    object: &Unpickled,
) -> Result<Storages, SourceError> {
    let Value::List(keys) = keys else {
        return Err(bad(path, "the storage keys are not a list"));
    };
    let mut storages = Storages::new();
    for key in keys.borrow().iter() {
        let key = key
            .as_str()
            .ok_or_else(|| bad(path, "a storage key is not a string"))?;
        let &(dtype, numel) = object
            .storages
            .get(key)
            .ok_or_else(|| bad(path, format!("storage {key} is listed but never used")))?;
        let count = map
            .get(at..at + 8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| {
                bad(
                    path,
                    format!("storage {key}: file ends before its size (truncated?)"),
                )
            })?;
        if usize::try_from(count).ok() != Some(numel) {
            return Err(bad(
                path,
                format!("storage {key} holds {count} elements, but {numel} were promised"),
            ));
        }
        let start = at + 8;
        let end = numel
            .checked_mul(dtype.size())
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= map.len())
            .ok_or_else(|| {
                bad(
                    path,
                    format!("storage {key} ({numel} {dtype:?} elements) runs past the end of the file (truncated?)"),
                )
            })?;
        if storages.insert(key.to_owned(), start).is_some() {
            return Err(bad(path, format!("storage {key} is listed twice")));
        }
        at = end;
    }
    if let Some(key) = object.storages.keys().find(|k| !storages.contains_key(*k)) {
        return Err(bad(
            path,
            format!("storage {key} is used but its data is missing"),
        ));
    }
    if at != map.len() {
        return Err(bad(
            path,
            format!("{} unexpected bytes after the last storage", map.len() - at),
        ));
    }
    Ok(storages)
}

#[cfg(test)]
mod tests {
    use super::super::pickle::PickleError;
    use super::*;

    #[test]
    fn the_magic_pickle_is_recognised_at_protocols_2_and_4() {
        let mut p2 = vec![0x80, 2, 0x8a, 10];
        p2.extend(MAGIC);
        p2.push(b'.');
        assert_eq!(magic_len(&p2), Some(p2.len()));
        let mut p4 = vec![0x80, 4, 0x95, 13, 0, 0, 0, 0, 0, 0, 0, 0x8a, 10];
        p4.extend(MAGIC);
        p4.push(b'.');
        assert_eq!(magic_len(&p4), Some(p4.len()));
        p2[5] ^= 1;
        assert_eq!(magic_len(&p2), None);
        assert_eq!(magic_len(b"\x80\x02"), None);
    }

    #[test]
    fn pickle_errors_name_the_part() {
        let e = pickle_error(
            Path::new("x.pt"),
            "sys_info",
            PickleError::Bad("oops".into()),
        );
        assert_eq!(e.to_string(), "x.pt: sys_info: oops");
    }
}
