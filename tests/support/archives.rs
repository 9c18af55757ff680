//! Building archives for tests, including hostile ones: entries are written with their
//! names exactly as given, bypassing the `tar` crate's own checks, as an attacker would.

use std::io::Write;

/// One entry: name, type, and the link target (links) or data (files).
pub type Spec<'a> = (&'a str, tar::EntryType, &'a [u8]);

pub fn raw_tar(entries: &[Spec]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, payload) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            payload
        } else {
            b""
        };
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            header.as_old_mut().linkname[..payload.len()].copy_from_slice(payload);
        }
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(if *kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn zstd(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).unwrap()
}

pub fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The size of a compressed tar once decoded: an honest upper bound of the bytes it
/// unpacks to, for manifests planted by hand (64 MiB for one that does not decode).
pub fn decoded_len(archive: &[u8], compression: &str) -> u64 {
    let mut sink = std::io::sink();
    let decoded = if compression == "zstd" {
        zstd::Decoder::new(archive).and_then(|mut decoder| std::io::copy(&mut decoder, &mut sink))
    } else {
        std::io::copy(&mut flate2::read::GzDecoder::new(archive), &mut sink)
    };
    decoded.unwrap_or(64 << 20)
}
