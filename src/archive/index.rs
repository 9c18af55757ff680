//! The file index of a release (DESIGN §6.9): every path of the tree with its kind,
//! mode, size, sha256 and symlink target, in one canonical order and one canonical
//! encoding, so that the same tree always gives the same bytes and the same sha256. The
//! manifest names that sha256; a signed manifest therefore covers every file's hash, and
//! an instance can check a tree it rebuilt itself, file by file, against it.
//!
//! ```text
//! {"format_version":1,"entries":[
//! {"path":"bin","kind":"directory","mode":493},
//! {"path":"bin/app","kind":"file","mode":493,"size":18,"sha256":"…"},
//! {"path":"app","kind":"symlink","mode":511,"target":"bin/app"}
//! ]}
//! ```
//!
//! Entries are sorted by their path's components, compared as bytes (so a directory
//! comes right before what it holds); the root is not listed. The index is stored
//! zstd-compressed; its sha256 is that of the JSON above.

use std::cmp::Ordering;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::policy::{Checked, Checker, Kind, Limits, PolicyError};

pub const FORMAT_VERSION: u32 = 1;
/// The most bytes of a compressed index read from the store.
pub const MAX_STORED_BYTES: u64 = 64 << 20;
/// The most bytes an index may decode to: about 1.5 million entries of ordinary paths.
pub const MAX_BYTES: u64 = 256 << 20;
/// zstd level for the stored index, as for archives (the build keeps no compressor above
/// level 4).
const ZSTD_LEVEL: i32 = 3;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl From<Kind> for EntryKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::File => Self::File,
            Kind::Directory => Self::Directory,
            Kind::Symlink => Self::Symlink,
        }
    }
}

/// One path of the release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Components joined by `/`, without `./`.
    pub path: String,
    pub kind: EntryKind,
    /// The permission bits the archive gives it (`0o777` at most).
    pub mode: u32,
    /// Files only: bytes, and the lowercase hex sha256 of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlinks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A release's index: its entries in canonical order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    pub entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format_version: u32,
    entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("does not decode: {0}")]
    Decode(String),
    #[error("format_version {0}; this bootlace reads version {FORMAT_VERSION}")]
    Version(u32),
    #[error("decodes to more than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("entry {path:?}: {why}")]
    Entry { path: String, why: &'static str },
    #[error("entry {path:?} is out of order: entries are sorted by path")]
    Order { path: String },
    #[error("refused by the unpack policy: {0}")]
    Policy(#[from] PolicyError),
}

/// Orders paths component by component, each compared as bytes: `a` < `a/b` < `a.b`.
pub fn path_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

impl Index {
    /// Records an entry that passed the unpack policy. Entries may come in any order;
    /// [`Index::finish`] sorts them.
    pub fn add(&mut self, checked: &Checked, mode: u32, file: Option<(u64, String)>, target: Option<String>) {
        if checked.path.is_empty() {
            return;
        }
        let (size, sha256) = file.map_or((None, None), |(size, sha)| (Some(size), Some(sha)));
        self.entries.push(Entry {
            path: checked.path.clone(),
            kind: checked.kind.into(),
            mode: mode & 0o777,
            size,
            sha256,
            target,
        });
    }

    /// Puts the entries in canonical order.
    pub fn finish(mut self) -> Self {
        self.entries.sort_by(|a, b| path_order(&a.path, &b.path));
        self
    }

    /// The canonical JSON: one entry a line.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = format!("{{\"format_version\":{FORMAT_VERSION},\"entries\":[\n").into_bytes();
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",\n");
            }
            serde_json::to_writer(&mut out, entry).expect("an index entry always serialises");
        }
        out.extend_from_slice(b"\n]}\n");
        out
    }

    /// The canonical JSON's lowercase hex sha256 and length.
    pub fn digest(&self) -> (String, u64) {
        let json = self.to_json();
        (hex::encode(Sha256::digest(&json)), json.len() as u64)
    }

    /// The index as stored: its canonical JSON, zstd-compressed.
    pub fn to_stored(&self) -> Vec<u8> {
        zstd::bulk::compress(&self.to_json(), ZSTD_LEVEL).expect("compressing into memory cannot fail")
    }

    /// The index from its stored bytes, checked: it decodes within its cap, is in the
    /// canonical order, every entry passes the unpack policy under `limits`, and its
    /// canonical JSON has the sha256 `sha256`.
    pub fn from_stored(stored: &[u8], sha256: &str, limits: Limits) -> Result<Index, IndexError> {
        let decoder = zstd::Decoder::new(stored).map_err(|e| IndexError::Decode(e.to_string()))?;
        let mut json = Vec::new();
        decoder
            .take(MAX_BYTES + 1)
            .read_to_end(&mut json)
            .map_err(|e| IndexError::Decode(e.to_string()))?;
        if json.len() as u64 > MAX_BYTES {
            return Err(IndexError::TooLarge);
        }
        let index = Self::parse(&json, limits)?;
        let (have, _) = index.digest();
        if have != sha256 {
            return Err(IndexError::Decode(format!(
                "its sha256 is {have}, the manifest names {sha256}"
            )));
        }
        Ok(index)
    }

    /// The index from its JSON, checked as [`Index::from_stored`] says, but for the digest.
    pub fn parse(json: &[u8], limits: Limits) -> Result<Index, IndexError> {
        let document: Document =
            serde_json::from_slice(json).map_err(|e| IndexError::Decode(e.to_string()))?;
        if document.format_version != FORMAT_VERSION {
            return Err(IndexError::Version(document.format_version));
        }
        let index = Index {
            entries: document.entries,
        };
        index.check(limits)?;
        // One tree, one encoding: what was read must be what this index writes, so that
        // its sha256 names it alone (delta packs patch the canonical bytes).
        if index.to_json() != json {
            return Err(IndexError::Decode("not in its canonical form".into()));
        }
        Ok(index)
    }

    /// Every entry well formed, in canonical order, and the whole tree within the unpack
    /// policy (paths, duplicates, symlinks resolving inside, caps).
    pub fn check(&self, limits: Limits) -> Result<(), IndexError> {
        let mut checker = Checker::new(limits);
        let mut previous: Option<&str> = None;
        for entry in &self.entries {
            let bad = |why| IndexError::Entry {
                path: crate::text::printable(&entry.path, 256),
                why,
            };
            if previous.is_some_and(|p| path_order(p, &entry.path) != Ordering::Less) {
                return Err(IndexError::Order {
                    path: crate::text::printable(&entry.path, 256),
                });
            }
            previous = Some(&entry.path);
            if entry.mode > 0o777 {
                return Err(bad("mode has bits beyond 0o777"));
            }
            let (entry_type, size) = match entry.kind {
                EntryKind::File => {
                    let (Some(size), Some(sha256)) = (entry.size, &entry.sha256) else {
                        return Err(bad("a file needs a size and a sha256"));
                    };
                    if sha256.len() != 64 || !sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                        return Err(bad("sha256 is not 64 lowercase hex digits"));
                    }
                    if entry.target.is_some() {
                        return Err(bad("a file has no symlink target"));
                    }
                    (tar::EntryType::Regular, size)
                }
                EntryKind::Directory | EntryKind::Symlink => {
                    if entry.size.is_some() || entry.sha256.is_some() {
                        return Err(bad("only a file has a size and a sha256"));
                    }
                    match (entry.kind, &entry.target) {
                        (EntryKind::Directory, None) => (tar::EntryType::Directory, 0),
                        (EntryKind::Symlink, Some(_)) => (tar::EntryType::Symlink, 0),
                        (EntryKind::Directory, Some(_)) => {
                            return Err(bad("a directory has no symlink target"));
                        }
                        _ => return Err(bad("a symlink needs a target")),
                    }
                }
            };
            let checked = checker.check(
                entry.path.as_bytes(),
                entry_type,
                size,
                entry.target.as_deref().map(str::as_bytes),
            )?;
            if checked.path != entry.path {
                return Err(bad("path is not in normal form (no `./`, no empty components)"));
            }
        }
        checker.finish()?;
        Ok(())
    }

    /// Files and the bytes they hold.
    pub fn totals(&self) -> (u64, u64) {
        self.entries
            .iter()
            .filter_map(|e| e.size)
            .fold((0, 0), |(files, bytes), size| (files + 1, bytes + size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Directory,
            mode: 0o755,
            size: None,
            sha256: None,
            target: None,
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            size: None,
            sha256: None,
            target: Some(target.into()),
        }
    }

    fn sample() -> Index {
        Index {
            entries: vec![
                file("README", b"hello"),
                link("app", "bin/app"),
                dir("bin"),
                file("bin/app", b"#!/bin/sh\n"),
                file("bin.txt", b"x"),
            ],
        }
        .finish()
    }

    #[test]
    fn directories_come_right_before_what_they_hold() {
        let paths: Vec<_> = sample().entries.into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["README", "app", "bin", "bin/app", "bin.txt"]);
    }

    #[test]
    fn the_stored_index_reads_back_and_its_digest_is_of_the_canonical_json() {
        let index = sample();
        let (sha256, size) = index.digest();
        assert_eq!(size, index.to_json().len() as u64);
        let back = Index::from_stored(&index.to_stored(), &sha256, Limits::default()).unwrap();
        assert_eq!(back, index);
        let err = Index::from_stored(&index.to_stored(), &"0".repeat(64), Limits::default()).unwrap_err();
        assert!(err.to_string().contains("the manifest names"), "{err}");
    }

    #[test]
    fn an_index_out_of_order_or_outside_the_policy_is_refused_naming_the_entry() {
        let mut unsorted = sample();
        unsorted.entries.swap(0, 1);
        let err = Index::parse(&unsorted.to_json(), Limits::default()).unwrap_err();
        assert!(matches!(err, IndexError::Order { .. }), "{err}");

        for (bad, says) in [
            (link("evil", "../../etc"), "outside the release"),
            (link("evil", "/etc"), "absolute"),
            (file("../evil", b"x"), "`..`"),
            (file("./evil", b"x"), "normal form"),
            (
                Entry {
                    sha256: Some("ABC".into()),
                    ..file("evil", b"x")
                },
                "hex",
            ),
            (
                Entry {
                    mode: 0o4755,
                    ..file("evil", b"x")
                },
                "0o777",
            ),
            (
                Entry {
                    target: Some("x".into()),
                    ..dir("evil")
                },
                "no symlink target",
            ),
        ] {
            let index = Index { entries: vec![bad] };
            let err = Index::parse(&index.to_json(), Limits::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("evil") && err.contains(says), "{says}: {err}");
        }

        let twice = Index {
            entries: vec![file("a", b"1"), dir("a/b"), dir("a/b")],
        };
        let err = Index::parse(&twice.to_json(), Limits::default()).unwrap_err();
        assert!(
            matches!(err, IndexError::Order { .. } | IndexError::Policy(_)),
            "{err}"
        );
    }

    #[test]
    fn an_index_past_the_entry_cap_is_refused() {
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = Index::parse(&sample().to_json(), limits).unwrap_err().to_string();
        assert!(err.contains("more than 2 entries"), "{err}");
    }

    #[test]
    fn an_index_that_decodes_to_garbage_or_another_version_is_refused() {
        let err = Index::from_stored(b"not zstd", &"0".repeat(64), Limits::default()).unwrap_err();
        assert!(matches!(err, IndexError::Decode(_)), "{err}");
        let err = Index::parse(br#"{"format_version":2,"entries":[]}"#, Limits::default()).unwrap_err();
        assert!(err.to_string().contains("format_version 2"), "{err}");
        let err = Index::parse(br#"{"format_version":1,"entries":[],"x":1}"#, Limits::default()).unwrap_err();
        assert!(matches!(err, IndexError::Decode(_)), "{err}");
        let spaced = String::from_utf8(sample().to_json())
            .unwrap()
            .replace(",\n", ", \n");
        let err = Index::parse(spaced.as_bytes(), Limits::default()).unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");
    }
}
