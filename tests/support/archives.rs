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

/// Every path of a tree with what it is: a file's mode and sha256, a symlink's target,
/// a directory's mode; two trees are the same when their listings are.
pub fn tree_listing(root: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(name, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(name, format!("dir {mode:o}"));
                walk(root, &path, out);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(name, format!("file {mode:o} {}", sha256_hex(&bytes)));
            } else {
                // A FIFO or a device: never read (a FIFO would wait for a writer).
                out.insert(name, format!("other {mode:o}"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A delta pack's header, as JSON, and the bytes that follow it (DESIGN §6.9).
pub fn split_delta_pack(pack: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let magic = b"bootlace-delta\n";
    assert!(pack.starts_with(magic));
    let at = magic.len();
    let length = u32::from_le_bytes(pack[at..at + 4].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&pack[at + 4..at + 4 + length]).unwrap();
    (header, pack[at + 4 + length..].to_vec())
}

/// A delta pack made of `header` and the bytes that follow it.
pub fn join_delta_pack(header: &serde_json::Value, rest: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut pack = b"bootlace-delta\n".to_vec();
    pack.extend_from_slice(&(json.len() as u32).to_le_bytes());
    pack.extend_from_slice(&json);
    pack.extend_from_slice(rest);
    pack
}
