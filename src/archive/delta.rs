//! Delta packs (DESIGN §6.9): what an instance holding one release needs to rebuild
//! another, in one object.
//!
//! ```text
//! "bootlace-delta\n"   magic
//! u32 little-endian    length of the header
//! header               JSON: the pair it rebuilds, the removed paths, one record per file
//! index payload        the new index's canonical JSON, a zstd patch against the base's
//! file payloads        one zstd frame per record, in the header's order: the file whole,
//!                      or a patch against the base's file at the same path
//! ```
//!
//! The pack carries no trust of its own. The new index it yields must hash to the sha256
//! the (signed) manifest names, and every file rebuilt must match that index; what a pack
//! gets wrong costs a fallback to the full download, never a wrong tree. Which files a
//! pack carries is not its choice either: exactly those of the new index whose content
//! the base holds nowhere ([`needed`]), which both sides compute from the two indexes.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use super::Hashing;
use super::index::{self, Entry, EntryKind, Index};

pub const MAGIC: &[u8] = b"bootlace-delta\n";
pub const FORMAT_VERSION: u32 = 1;
/// The most bytes a header may take: about 300,000 records of ordinary paths.
pub const MAX_HEADER_BYTES: u32 = 32 << 20;
/// A file is patched against its old version only when both fit in this: the decoder
/// holds the old one in memory.
pub const PATCH_MAX: u64 = 64 << 20;
/// zstd level 3, as for archives (the build keeps no compressor above level 4).
const LEVEL: i32 = 3;
/// The largest window a payload may ask for: 1 GiB, which an index patch near
/// [`index::MAX_BYTES`] needs; file patches need at most 2 × [`PATCH_MAX`].
const MAX_WINDOW_LOG: u32 = 30;

/// How a file's bytes are carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// A zstd frame of the file.
    Whole,
    /// A zstd frame whose reference prefix is the base's file at the same path.
    Patch,
}

/// One file the pack carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub path: String,
    pub how: How,
    /// Bytes of its payload in the pack.
    pub bytes: u64,
}

/// The pack's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format_version: u32,
    /// The tag it rebuilds.
    pub tag: String,
    /// The archive sha256 of the release it starts from.
    pub base_sha256: String,
    /// The sha256 of that release's index, which the index payload patches.
    pub base_index_sha256: String,
    /// The sha256 of the new index (the manifest's).
    pub index_sha256: String,
    /// Bytes of the index payload.
    pub index_bytes: u64,
    /// Paths of the base the new release no longer has.
    pub removed: Vec<String>,
    pub files: Vec<Record>,
}

impl Header {
    /// Bytes of every payload.
    pub fn payload_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(self.index_bytes, |sum, r| sum.saturating_add(r.bytes))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("not a delta pack (its first bytes say otherwise)")]
    Magic,
    #[error("header of {0} bytes, over the {MAX_HEADER_BYTES}-byte limit")]
    HeaderTooLarge(u32),
    #[error("header does not decode: {0}")]
    Header(String),
    #[error("format_version {0}; this bootlace reads version {FORMAT_VERSION}")]
    Version(u32),
    #[error("{0}")]
    Mismatch(String),
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The files of `new` whose content no file of `old` has: what a pack from `old` to
/// `new` carries, in the new index's order. Every other file of `new` is a copy of one
/// of `old`'s.
pub fn needed<'a>(old: &Index, new: &'a Index) -> Vec<&'a Entry> {
    let held: HashSet<&str> = old.entries.iter().filter_map(|e| e.sha256.as_deref()).collect();
    new.entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.sha256.as_deref().is_some_and(|sha| !held.contains(sha)))
        .collect()
}

/// The paths of `old` that `new` does not have, in `old`'s order.
pub fn removed(old: &Index, new: &Index) -> Vec<String> {
    let kept: HashSet<&str> = new.entries.iter().map(|e| e.path.as_str()).collect();
    old.entries
        .iter()
        .filter(|e| !kept.contains(e.path.as_str()))
        .map(|e| e.path.clone())
        .collect()
}

/// Where each content of `old` can be copied from: its sha256 to one path holding it.
pub fn sources(old: &Index) -> HashMap<&str, &str> {
    let mut sources = HashMap::new();
    for entry in &old.entries {
        if let Some(sha) = &entry.sha256 {
            sources.entry(sha.as_str()).or_insert(entry.path.as_str());
        }
    }
    sources
}

/// The base's paths whose old bytes a patch from `base` to `new` would use: a
/// [`needed`] file whose path the base also holds as a file, both within [`PATCH_MAX`].
pub fn patch_bases(base: &Index, new: &Index) -> HashSet<String> {
    let old: HashMap<&str, &Entry> = base.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    needed(base, new)
        .into_iter()
        .filter(|new| new.size.is_some_and(|s| s <= PATCH_MAX))
        .filter(|new| {
            old.get(new.path.as_str())
                .is_some_and(|o| o.kind == EntryKind::File && o.size.is_some_and(|s| s <= PATCH_MAX))
        })
        .map(|new| new.path.clone())
        .collect()
}

/// The smallest window log that covers `bytes` (at least zstd's minimum of 10).
fn window_log(bytes: u64) -> u32 {
    (64 - bytes.max(1).leading_zeros()).clamp(10, MAX_WINDOW_LOG)
}

/// `data` as a zstd frame, a patch against `base` when one is given.
pub fn encode(data: &[u8], base: Option<&[u8]>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = match base {
        Some(base) => {
            let mut encoder = zstd::Encoder::with_ref_prefix(&mut out, LEVEL, base)?;
            encoder.window_log(window_log(base.len() as u64 + data.len() as u64))?;
            // As `zstd --patch-from` does: without it, level 3 finds the old file's
            // long runs only piecewise (583 bytes for a one-line change of 85 KB, 49 with).
            encoder.long_distance_matching(true)?;
            encoder
        }
        None => zstd::Encoder::new(&mut out, LEVEL)?,
    };
    encoder.set_pledged_src_size(Some(data.len() as u64))?;
    encoder.include_checksum(false)?;
    encoder.write_all(data)?;
    encoder.finish()?;
    Ok(out)
}

/// Compresses `data` whole into `out`, streaming; its sha256 and length.
pub fn encode_stream(data: impl Read, out: impl Write) -> io::Result<(String, u64)> {
    let mut encoder = zstd::Encoder::new(out, LEVEL)?;
    let mut hashing = Hashing::new(data);
    io::copy(&mut hashing, &mut encoder)?;
    encoder.finish()?;
    let (_, sha256, size) = hashing.finish();
    Ok((sha256, size))
}

/// Decodes one payload of `bytes` bytes from `pack` into `out`: exactly `size` bytes,
/// no more, and the payload used up to its last byte. The sha256 of what was written.
pub fn decode(
    pack: &mut impl Read,
    bytes: u64,
    base: Option<&[u8]>,
    size: u64,
    out: impl Write,
) -> io::Result<String> {
    let payload = BufReader::with_capacity(128 << 10, pack.take(bytes));
    let mut decoder = match base {
        Some(base) => zstd::Decoder::with_ref_prefix(payload, base)?,
        None => zstd::Decoder::with_buffer(payload)?,
    }
    .single_frame();
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    let mut out = Hashing::new(out);
    let copied = io::copy(&mut (&mut decoder).take(size.saturating_add(1)), &mut out)?;
    if copied != size {
        return Err(invalid(format!(
            "decodes to {copied} bytes or more, the index says {size}"
        )));
    }
    let mut rest = decoder.finish();
    if !rest.fill_buf()?.is_empty() || rest.into_inner().limit() > 0 {
        return Err(invalid(format!(
            "its payload is not {bytes} bytes of one zstd frame"
        )));
    }
    let (_, sha256, _) = out.finish();
    Ok(sha256)
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Writes a pack: the magic, `header`, then its payloads as `payloads` holds them
/// (the index payload first, then one per record, in order).
pub fn write_pack(mut out: impl Write, header: &Header, mut payloads: impl Read) -> io::Result<u64> {
    let json = serde_json::to_vec(header).expect("a delta header always serialises");
    let length = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= MAX_HEADER_BYTES)
        .ok_or_else(|| {
            invalid(format!(
                "a delta header of {} bytes is over the limit",
                json.len()
            ))
        })?;
    out.write_all(MAGIC)?;
    out.write_all(&length.to_le_bytes())?;
    out.write_all(&json)?;
    let copied = io::copy(&mut payloads, &mut out)?;
    if copied != header.payload_bytes() {
        return Err(invalid(format!(
            "payloads of {copied} bytes, the header says {}",
            header.payload_bytes()
        )));
    }
    Ok((MAGIC.len() + 4 + json.len()) as u64 + copied)
}

/// Reads and checks a pack's header: its magic, size cap, version, and records that
/// name each path once, in normal form.
pub fn read_header(pack: &mut impl Read) -> Result<Header, DeltaError> {
    let mut magic = [0u8; MAGIC.len()];
    pack.read_exact(&mut magic).map_err(|_| DeltaError::Magic)?;
    if magic != MAGIC {
        return Err(DeltaError::Magic);
    }
    let mut length = [0u8; 4];
    pack.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length);
    if length > MAX_HEADER_BYTES {
        return Err(DeltaError::HeaderTooLarge(length));
    }
    let mut json = vec![0u8; length as usize];
    pack.read_exact(&mut json)?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| DeltaError::Header(e.to_string()))?;
    if header.format_version != FORMAT_VERSION {
        return Err(DeltaError::Version(header.format_version));
    }
    let mut seen = HashSet::new();
    for record in &header.files {
        if !seen.insert(record.path.as_str()) {
            return Err(DeltaError::File {
                path: crate::text::printable(&record.path, 256),
                why: "carried twice".into(),
            });
        }
    }
    Ok(header)
}

/// The new index, decoded from the pack's index payload against the base's canonical
/// JSON and checked: its sha256 must be `sha256` (the manifest's), and it must pass
/// the unpack policy under `limits`.
pub fn read_index(
    pack: &mut impl Read,
    header: &Header,
    base: &Index,
    sha256: &str,
    limits: super::policy::Limits,
) -> Result<Index, DeltaError> {
    let base_json = base.to_json();
    let bytes = header.index_bytes;
    let mut json = Vec::new();
    // An index is capped; the decoded length is checked against the cap, then the hash.
    let payload = BufReader::new(pack.take(bytes));
    let mut decoder = zstd::Decoder::with_ref_prefix(payload, &base_json)?.single_frame();
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    (&mut decoder).take(index::MAX_BYTES + 1).read_to_end(&mut json)?;
    if json.len() as u64 > index::MAX_BYTES {
        return Err(DeltaError::Mismatch(format!(
            "its index decodes to more than {} bytes",
            index::MAX_BYTES
        )));
    }
    let mut rest = decoder.finish();
    if !rest.fill_buf()?.is_empty() || rest.into_inner().limit() > 0 {
        return Err(DeltaError::Mismatch(format!(
            "its index payload is not {bytes} bytes of one zstd frame"
        )));
    }
    let have = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    if have != sha256 {
        return Err(DeltaError::Mismatch(format!(
            "its index has sha256 {have}, the manifest names {sha256}"
        )));
    }
    Index::parse(&json, limits).map_err(|e| DeltaError::Mismatch(format!("its index: {e}")))
}

/// The records a pack from `base` to `new` must have: one for each [`needed`] file, and
/// none else. Checks `header` against that, and against what the two indexes say was
/// removed.
pub fn check_records(header: &Header, base: &Index, new: &Index) -> Result<(), DeltaError> {
    let needed: HashSet<&str> = needed(base, new).into_iter().map(|e| e.path.as_str()).collect();
    let carried: HashSet<&str> = header.files.iter().map(|r| r.path.as_str()).collect();
    if let Some(extra) = carried.difference(&needed).next() {
        return Err(DeltaError::File {
            path: crate::text::printable(extra, 256),
            why: "carried, but the base already holds its content or the index has no such file".into(),
        });
    }
    if let Some(missing) = needed.difference(&carried).next() {
        return Err(DeltaError::File {
            path: crate::text::printable(missing, 256),
            why: "not carried, and the base holds its content nowhere".into(),
        });
    }
    if header.removed != removed(base, new) {
        return Err(DeltaError::Mismatch(
            "its removed paths are not those the two indexes differ by".into(),
        ));
    }
    Ok(())
}

/// Builds a pack's payloads: the index patch first, then each needed file as it comes,
/// written to `out` (a temp file) while the header's records are collected.
pub struct Builder<'a, W: Write> {
    base: &'a Index,
    new: &'a Index,
    /// Needed paths not yet added, with their entries.
    wanted: HashMap<&'a str, &'a Entry>,
    /// Old bytes of the paths a patch may be made against.
    bases: HashMap<String, Vec<u8>>,
    /// What the base's index says each of its files hashes to.
    base_sha256: HashMap<&'a str, &'a str>,
    records: Vec<Record>,
    index_bytes: u64,
    out: W,
}

impl<'a, W: Write> Builder<'a, W> {
    /// A builder from `base` to `new`, writing payloads to `out`; the index payload is
    /// written at once.
    pub fn new(base: &'a Index, new: &'a Index, mut out: W) -> io::Result<Self> {
        let patch = encode(&new.to_json(), Some(&base.to_json()))?;
        out.write_all(&patch)?;
        Ok(Self {
            base,
            new,
            wanted: needed(base, new)
                .into_iter()
                .map(|e| (e.path.as_str(), e))
                .collect(),
            bases: HashMap::new(),
            base_sha256: base
                .entries
                .iter()
                .filter_map(|e| Some((e.path.as_str(), e.sha256.as_deref()?)))
                .collect(),
            records: Vec::new(),
            index_bytes: patch.len() as u64,
            out,
        })
    }

    /// Gives the old bytes of `path` (one of [`Builder::patch_bases`]), checked against
    /// the base's index: a base archive that is not what its index says would make a
    /// pack no instance can use.
    pub fn add_base(&mut self, path: String, bytes: Vec<u8>) -> Result<(), DeltaError> {
        let have = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let expected = self.base_sha256.get(path.as_str()).copied().unwrap_or_default();
        if have != expected {
            return Err(DeltaError::File {
                path: crate::text::printable(&path, 256),
                why: format!(
                    "the base release's archive has it with sha256 {have}, its index says {expected}"
                ),
            });
        }
        self.bases.insert(path, bytes);
        Ok(())
    }

    /// Whether `path` is one the pack still needs.
    pub fn wants(&self, path: &str) -> bool {
        self.wanted.contains_key(path)
    }

    /// Adds the new bytes of `path` (which [`Builder::wants`]), read from `data`: checked
    /// against the new index, then written whole or as a patch, whichever is smaller.
    pub fn add_file(&mut self, path: &str, data: impl Read) -> Result<(), DeltaError> {
        let Some(entry) = self.wanted.remove(path) else {
            return Ok(());
        };
        let size = entry.size.unwrap_or_default();
        let expected = entry.sha256.as_deref().unwrap_or_default();
        let mismatch = |have: &str| DeltaError::File {
            path: crate::text::printable(path, 256),
            why: format!(
                "its content has sha256 {have}, the index says {expected}: it changed since it was indexed"
            ),
        };
        let (how, bytes) = match self.bases.remove(path) {
            Some(base) if size <= PATCH_MAX => {
                let mut body = Vec::with_capacity(size as usize);
                data.take(PATCH_MAX + 1).read_to_end(&mut body)?;
                let have = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
                if have != expected || body.len() as u64 != size {
                    return Err(mismatch(&have));
                }
                let whole = encode(&body, None)?;
                let patch = encode(&body, Some(&base))?;
                let (how, payload) = if patch.len() < whole.len() {
                    (How::Patch, patch)
                } else {
                    (How::Whole, whole)
                };
                self.out.write_all(&payload)?;
                (how, payload.len() as u64)
            }
            _ => {
                let mut counting = Hashing::new(&mut self.out);
                let (have, read) = encode_stream(data.take(size.saturating_add(1)), &mut counting)?;
                if have != expected || read != size {
                    return Err(mismatch(&have));
                }
                let (_, _, bytes) = counting.finish();
                (How::Whole, bytes)
            }
        };
        self.records.push(Record {
            path: entry.path.clone(),
            how,
            bytes,
        });
        Ok(())
    }

    /// The header, once every needed file was added; and the payload writer back.
    pub fn finish(self, tag: &str, base_sha256: &str) -> Result<(Header, W), DeltaError> {
        if let Some(missing) = self.wanted.keys().min() {
            return Err(DeltaError::File {
                path: crate::text::printable(missing, 256),
                why: "in the index, but not in the release's files".into(),
            });
        }
        let header = Header {
            format_version: FORMAT_VERSION,
            tag: tag.to_owned(),
            base_sha256: base_sha256.to_owned(),
            base_index_sha256: self.base.digest().0,
            index_sha256: self.new.digest().0,
            index_bytes: self.index_bytes,
            removed: removed(self.base, self.new),
            files: self.records,
        };
        Ok((header, self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::policy::Limits;
    use sha2::{Digest, Sha256};

    fn file(path: &str, body: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: Some(body.len() as u64),
            sha256: Some(hex::encode(Sha256::digest(body))),
            target: None,
        }
    }

    fn index(files: &[(&str, &[u8])]) -> Index {
        Index {
            entries: files.iter().map(|(p, b)| file(p, b)).collect(),
        }
        .finish()
    }

    fn config(lines: usize, changed: bool) -> Vec<u8> {
        (0..lines)
            .map(|i| match (i, changed) {
                (500, true) => "listen_port = 8443\n".to_owned(),
                _ => format!("setting_{i} = \"a value that repeats {}\"\n", i * 7),
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_pack_carries_only_new_content_and_rebuilds_it_byte_for_byte() {
        let (old_conf, new_conf) = (config(2000, false), config(2000, true));
        let old = index(&[
            ("app.conf", &old_conf),
            ("bin/app", b"binary"),
            ("gone", b"bye"),
            ("moved/from", b"moving"),
        ]);
        let new = index(&[
            ("app.conf", &new_conf),
            ("bin/app", b"binary"),
            ("fresh", b"brand new"),
            ("moved/to", b"moving"),
        ]);
        let paths: Vec<_> = needed(&old, &new).iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, ["app.conf", "fresh"]);
        assert_eq!(removed(&old, &new), ["gone", "moved/from"]);

        let mut builder = Builder::new(&old, &new, Vec::new()).unwrap();
        assert_eq!(patch_bases(&old, &new), HashSet::from(["app.conf".to_owned()]));
        builder.add_base("app.conf".into(), old_conf.clone()).unwrap();
        builder.add_file("fresh", &b"brand new"[..]).unwrap();
        builder.add_file("app.conf", &new_conf[..]).unwrap();
        let (header, payloads) = builder.finish("v2", &"a".repeat(64)).unwrap();
        assert_eq!(header.files[1].how, How::Patch);
        assert!(
            header.files[1].bytes < 100,
            "a one-line change patches small: {header:?}"
        );
        let mut pack = Vec::new();
        let written = write_pack(&mut pack, &header, &payloads[..]).unwrap();
        assert_eq!(written, pack.len() as u64);

        let mut reader = &pack[..];
        let read = read_header(&mut reader).unwrap();
        assert_eq!(read, header);
        let (sha, _) = new.digest();
        let rebuilt = read_index(&mut reader, &read, &old, &sha, Limits::default()).unwrap();
        assert_eq!(rebuilt, new);
        check_records(&read, &old, &rebuilt).unwrap();
        let mut out = Vec::new();
        let got = decode(&mut reader, read.files[0].bytes, None, 9, &mut out).unwrap();
        assert_eq!(
            (out.as_slice(), got),
            (&b"brand new"[..], file("", b"brand new").sha256.unwrap())
        );
        let mut out = Vec::new();
        decode(
            &mut reader,
            read.files[1].bytes,
            Some(&old_conf),
            new_conf.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, new_conf);
        assert!(reader.is_empty());
    }

    #[test]
    fn a_payload_that_lies_about_its_size_or_its_base_is_refused() {
        let body = config(100, false);
        let payload = encode(&body, None).unwrap();
        let mut out = Vec::new();
        let err = decode(&mut &payload[..], payload.len() as u64, None, 10, &mut out).unwrap_err();
        assert!(err.to_string().contains("the index says 10"), "{err}");
        // Bytes after the frame, within the payload's length.
        let mut padded = payload.clone();
        padded.extend_from_slice(b"junk");
        let err = decode(
            &mut &padded[..],
            padded.len() as u64,
            None,
            body.len() as u64,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("one zstd frame"), "{err}");
        // A patch decoded against another base gives other bytes (or none).
        let (old, new) = (config(1000, false), config(1000, true));
        let patch = encode(&new, Some(&old)).unwrap();
        let decoded = decode(
            &mut &patch[..],
            patch.len() as u64,
            Some(&new),
            new.len() as u64,
            &mut Vec::new(),
        );
        assert!(decoded.is_err() || decoded.unwrap() != file("", &new).sha256.unwrap());
        let right = decode(
            &mut &patch[..],
            patch.len() as u64,
            Some(&old),
            new.len() as u64,
            &mut Vec::new(),
        );
        assert_eq!(right.unwrap(), file("", &new).sha256.unwrap());
    }

    #[test]
    fn a_header_that_is_not_one_is_refused() {
        assert!(matches!(
            read_header(&mut &b"PK\x03\x04"[..]),
            Err(DeltaError::Magic)
        ));
        let mut big = MAGIC.to_vec();
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_header(&mut &big[..]),
            Err(DeltaError::HeaderTooLarge(_))
        ));

        let old = index(&[("a", b"1")]);
        let new = index(&[("a", b"2"), ("b", b"1")]);
        let builder = Builder::new(&old, &new, Vec::new()).unwrap();
        let err = builder.finish("v2", "x").unwrap_err().to_string();
        assert!(err.contains("a:") && err.contains("not in the release"), "{err}");

        // Records the indexes do not call for are refused, naming the path.
        let header = Header {
            format_version: 1,
            tag: "v2".into(),
            base_sha256: String::new(),
            base_index_sha256: String::new(),
            index_sha256: String::new(),
            index_bytes: 0,
            removed: vec![],
            files: vec![Record {
                path: "b".into(),
                how: How::Whole,
                bytes: 1,
            }],
        };
        let err = check_records(&header, &old, &new).unwrap_err().to_string();
        assert!(err.starts_with("b: carried"), "{err}");
        let err = check_records(
            &Header {
                files: vec![],
                ..header
            },
            &old,
            &new,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("a: not carried"), "{err}");
    }
}
