//! Archives and pickles built byte by byte, for tests that need a
//! specific defect or a structure no real checkpoint has.

/// A stored zip with the given entries, like torch.save writes (without
/// alignment padding, which readers must not rely on).
pub fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let header = |sig: &[u8], central: bool| {
            let mut h = sig.to_vec();
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // stored
            h.extend([0u8; 4]); // time, date
            h.extend(0u32.to_le_bytes()); // crc (torch may write none)
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend([0u8; 6]); // comment len, disk, internal attrs
                h.extend(0u32.to_le_bytes()); // external attrs
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(header(b"PK\x03\x04", false));
        out.extend(*data);
        central.extend(header(b"PK\x01\x02", true));
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// `torch.serialization.MAGIC_NUMBER` as the legacy format's first pickle.
pub const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// A legacy (non-zip) torch.save stream around the object pickle
/// `object`: magic, protocol 1001, a little-endian sys_info, the object,
/// the list of storage keys, then per storage its element count and bytes.
pub fn legacy_stream(object: &[u8], storages: &[(&str, i64, &[u8])]) -> Vec<u8> {
    let mut out = LEGACY_MAGIC.to_vec();
    out.extend(b"\x80\x02M\xe9\x03.");
    out.extend(b"\x80\x02}(X\x0d\x00\x00\x00little_endian\x88u.");
    out.extend(object);
    out.extend(b"\x80\x02](");
    for (key, _, _) in storages {
        out.push(b'X');
        out.extend((key.len() as u32).to_le_bytes());
        out.extend(key.as_bytes());
    }
    out.extend(b"e.");
    for (_, count, bytes) in storages {
        out.extend(count.to_le_bytes());
        out.extend(*bytes);
    }
    out
}

/// The entries of a zip whose members are stored (what torch.save
/// writes), in order: name and bytes, located through the central
/// directory (torch's local headers defer sizes to data descriptors).
pub fn read_stored_zip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
    let eocd = bytes
        .windows(4)
        .rposition(|w| w == b"PK\x05\x06")
        .expect("an end of central directory");
    let (count, mut at) = (u16_at(eocd + 10), u32_at(eocd + 16));
    let mut entries = Vec::new();
    for _ in 0..count {
        assert_eq!(&bytes[at..at + 4], b"PK\x01\x02");
        assert_eq!(u16_at(at + 10), 0, "a compressed member");
        let size = u32_at(at + 24);
        let (name_len, extra, comment) = (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32));
        let local = u32_at(at + 42);
        let name = String::from_utf8(bytes[at + 46..at + 46 + name_len].to_vec()).unwrap();
        let data = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        entries.push((name, bytes[data..data + size].to_vec()));
        at += 46 + name_len + extra + comment;
    }
    entries
}
