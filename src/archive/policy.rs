//! The unpack policy (DESIGN §5), applied entry by entry to any tar stream: at push
//! time to refuse a hostile archive early, at deploy time before anything is written.
//!
//! Allowed: regular files, directories, and symlinks that are relative and resolve
//! inside the release. Everything else rejects the whole archive: hard links, devices,
//! FIFOs, absolute paths, `..`, duplicate paths, entries under a symlink, and archives
//! past the caps. A leading `./` is normal.

use std::collections::{HashMap, HashSet};

/// Caps on what one archive may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: u64,
    pub max_unpacked_bytes: u64,
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_unpacked_bytes: 64 << 30,
            max_path_bytes: 4096,
        }
    }
}

/// Symlinks resolve through at most this many links, as Linux's own limit.
const MAX_LINK_HOPS: usize = 40;

/// Why an archive is refused. Each names the entry.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("entry {path}: absolute paths are not allowed")]
    Absolute { path: String },
    #[error("entry {path}: `..` is not allowed in paths")]
    ParentDir { path: String },
    #[error("entry {path}: path is longer than {max} bytes")]
    PathTooLong { path: String, max: usize },
    #[error("entry {path}: {kind} entries are not allowed")]
    Kind { path: String, kind: String },
    #[error("entry {path}: appears twice")]
    Duplicate { path: String },
    #[error("entry {path}: lies under the symlink {link}")]
    UnderSymlink { path: String, link: String },
    #[error("entry {path}: symlink target {target} is absolute")]
    AbsoluteLink { path: String, target: String },
    #[error("entry {path}: symlink target {target} resolves outside the release")]
    EscapingLink { path: String, target: String },
    #[error("entry {path}: symlink target {target} loops or nests too deep")]
    LinkLoop { path: String, target: String },
    #[error("more than {max} entries")]
    TooManyEntries { max: u64 },
    #[error("more than {max} bytes unpacked")]
    TooLarge { max: u64 },
}

/// What an entry is, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

/// An entry that passed: its normalised relative path and kind.
#[derive(Debug)]
pub struct Checked {
    /// Components joined by `/`, without `./`; empty for the root directory.
    pub path: String,
    pub kind: Kind,
}

/// Totals of an archive that passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub unpacked_bytes: u64,
}

/// Checks the entries of one archive, in order.
#[derive(Debug, Default)]
pub struct Checker {
    limits: Limits,
    entries: u64,
    totals: Totals,
    /// Every path seen, explicit or as a parent, with whether it is a directory.
    seen: HashMap<Vec<String>, Kind>,
    explicit: HashSet<Vec<String>>,
    links: HashMap<Vec<String>, String>,
}

impl Checker {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Checks one entry. `entry_type` is the tar type byte; `size` the data size;
    /// `link` the symlink target.
    pub fn check(
        &mut self,
        raw_path: &[u8],
        entry_type: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
    ) -> Result<Checked, PolicyError> {
        let shown = shown(raw_path);
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(PolicyError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        if raw_path.len() > self.limits.max_path_bytes {
            let max = self.limits.max_path_bytes;
            return Err(PolicyError::PathTooLong { path: shown, max });
        }
        let kind = kind_of(entry_type).ok_or_else(|| PolicyError::Kind {
            path: shown.clone(),
            kind: kind_name(entry_type),
        })?;
        let components = components(raw_path).map_err(|make| make(shown.clone()))?;
        if components.is_empty() {
            // The root itself (`./`): only as a directory, and nothing to create.
            return match kind {
                Kind::Directory => Ok(Checked {
                    path: String::new(),
                    kind,
                }),
                _ => Err(PolicyError::Kind {
                    path: shown,
                    kind: kind_name(entry_type),
                }),
            };
        }
        self.place(&components, kind, &shown)?;
        match kind {
            Kind::File => {
                self.totals.files += 1;
                self.totals.unpacked_bytes = self.totals.unpacked_bytes.saturating_add(size);
                if self.totals.unpacked_bytes > self.limits.max_unpacked_bytes {
                    let max = self.limits.max_unpacked_bytes;
                    return Err(PolicyError::TooLarge { max });
                }
            }
            Kind::Symlink => {
                let target = String::from_utf8_lossy(link.unwrap_or_default()).into_owned();
                if target.starts_with('/') {
                    return Err(PolicyError::AbsoluteLink { path: shown, target });
                }
                if target.is_empty() || target.len() > self.limits.max_path_bytes {
                    return Err(PolicyError::EscapingLink { path: shown, target });
                }
                self.links.insert(components.clone(), target);
            }
            Kind::Directory => {}
        }
        Ok(Checked {
            path: components.join("/"),
            kind,
        })
    }

    /// Records an entry's path, refusing duplicates, entries under symlinks, and a
    /// non-directory where a directory already is.
    fn place(&mut self, components: &[String], kind: Kind, shown: &str) -> Result<(), PolicyError> {
        for depth in 1..components.len() {
            let parent = &components[..depth];
            match self.seen.get(parent) {
                Some(Kind::Directory) => {}
                Some(_) => {
                    return Err(PolicyError::UnderSymlink {
                        path: shown.to_owned(),
                        link: parent.join("/"),
                    });
                }
                None => {
                    self.seen.insert(parent.to_vec(), Kind::Directory);
                }
            }
        }
        let duplicate = |path: &str| PolicyError::Duplicate {
            path: path.to_owned(),
        };
        if !self.explicit.insert(components.to_vec()) {
            return Err(duplicate(shown));
        }
        match self.seen.insert(components.to_vec(), kind) {
            // A directory first implied by its children, then given explicitly.
            Some(Kind::Directory) if kind == Kind::Directory => Ok(()),
            Some(_) => Err(duplicate(shown)),
            None => Ok(()),
        }
    }

    /// Checks what needs the whole archive: every symlink resolves inside the release.
    pub fn finish(self) -> Result<Totals, PolicyError> {
        for (path, target) in &self.links {
            let shown = path.join("/");
            let parent = path[..path.len() - 1].to_vec();
            match resolve(&self.links, parent, target, 0) {
                Ok(_) => {}
                Err(Unresolved::Escapes) => {
                    return Err(PolicyError::EscapingLink {
                        path: shown,
                        target: target.clone(),
                    });
                }
                Err(Unresolved::Loops) => {
                    return Err(PolicyError::LinkLoop {
                        path: shown,
                        target: target.clone(),
                    });
                }
            }
        }
        Ok(self.totals)
    }
}

enum Unresolved {
    Escapes,
    Loops,
}

/// Resolves `target` from directory `at` within the archive's tree, following the
/// archive's own symlinks, as the kernel would once unpacked.
fn resolve(
    links: &HashMap<Vec<String>, String>,
    mut at: Vec<String>,
    target: &str,
    hops: usize,
) -> Result<Vec<String>, Unresolved> {
    if hops > MAX_LINK_HOPS {
        return Err(Unresolved::Loops);
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                at.pop().ok_or(Unresolved::Escapes)?;
            }
            name => {
                at.push(name.to_owned());
                if let Some(next) = links.get(&at) {
                    at.pop();
                    at = resolve(links, at, next, hops + 1)?;
                }
            }
        }
    }
    Ok(at)
}

/// Splits a tar path into normal components; `./` and empty components are dropped.
fn components(raw: &[u8]) -> Result<Vec<String>, fn(String) -> PolicyError> {
    if raw.starts_with(b"/") {
        return Err(|path| PolicyError::Absolute { path });
    }
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(|path| PolicyError::ParentDir { path }),
            name => parts.push(String::from_utf8_lossy(name).into_owned()),
        }
    }
    Ok(parts)
}

fn kind_of(entry_type: tar::EntryType) -> Option<Kind> {
    match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous => Some(Kind::File),
        tar::EntryType::Directory => Some(Kind::Directory),
        tar::EntryType::Symlink => Some(Kind::Symlink),
        _ => None,
    }
}

fn kind_name(entry_type: tar::EntryType) -> String {
    match entry_type {
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        tar::EntryType::Regular => "regular file at the root".into(),
        tar::EntryType::Symlink => "symlink at the root".into(),
        other => format!("{other:?}"),
    }
}

/// A path for a message: lossy UTF-8, quoted and escaped.
fn shown(raw: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};

    fn check_all(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Result<Totals, PolicyError> {
        let mut checker = Checker::new(Limits::default());
        for (path, kind, link) in entries {
            checker.check(path.as_bytes(), *kind, 10, link.map(str::as_bytes))?;
        }
        checker.finish()
    }

    #[test]
    fn a_plain_tree_passes_with_totals() {
        let totals = check_all(&[
            ("./", Directory, None),
            ("./bin/", Directory, None),
            ("./bin/app", Regular, None),
            ("./lib/x.so", Regular, None),
            ("./bin/current", Symlink, Some("app")),
            ("./lib/up", Symlink, Some("../bin/app")),
        ])
        .unwrap();
        assert_eq!(
            totals,
            Totals {
                files: 2,
                unpacked_bytes: 20
            }
        );
    }

    #[test]
    fn rejects_absolute_and_parent_paths() {
        assert!(matches!(
            check_all(&[("/etc/passwd", Regular, None)]),
            Err(PolicyError::Absolute { .. })
        ));
        assert!(matches!(
            check_all(&[("a/../../x", Regular, None)]),
            Err(PolicyError::ParentDir { .. })
        ));
        assert!(matches!(
            check_all(&[("..", Directory, None)]),
            Err(PolicyError::ParentDir { .. })
        ));
    }

    #[test]
    fn rejects_special_entries() {
        for kind in [Link, Char, Block, Fifo] {
            let err = check_all(&[("x", kind, Some("y"))]).unwrap_err();
            assert!(matches!(err, PolicyError::Kind { .. }), "{kind:?}: {err}");
        }
    }

    #[test]
    fn rejects_duplicates_including_file_then_dir() {
        assert!(matches!(
            check_all(&[("a", Regular, None), ("./a", Regular, None)]),
            Err(PolicyError::Duplicate { .. })
        ));
        assert!(matches!(
            check_all(&[("a/b", Regular, None), ("a", Regular, None)]),
            Err(PolicyError::Duplicate { .. })
        ));
        assert!(check_all(&[("a/b", Regular, None), ("a/", Directory, None)]).is_ok());
        assert!(matches!(
            check_all(&[("a/", Directory, None), ("a/", Directory, None)]),
            Err(PolicyError::Duplicate { .. })
        ));
    }

    #[test]
    fn rejects_link_then_file_through_it() {
        // CVE-2018-20990
        let err = check_all(&[("x", Symlink, Some("sub")), ("x/evil", Regular, None)]).unwrap_err();
        assert!(matches!(err, PolicyError::UnderSymlink { .. }), "{err}");
    }

    #[test]
    fn rejects_symlink_then_dir_of_the_same_name() {
        // CVE-2026-33056
        let err = check_all(&[("d", Symlink, Some("elsewhere")), ("d/", Directory, None)]).unwrap_err();
        assert!(matches!(err, PolicyError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn rejects_escaping_symlinks() {
        let cases: [&[(&str, tar::EntryType, Option<&str>)]; 4] = [
            &[("a", Symlink, Some("../x"))],
            &[("d/a", Symlink, Some("../../x"))],
            // CVE-2021-38511: a link to `..`, then a path through it.
            &[("up", Symlink, Some("..")), ("y", Symlink, Some("up/etc"))],
            // Lexically inside, really outside: `s` is the root, so `s/..` is above it.
            &[("s", Symlink, Some(".")), ("l", Symlink, Some("s/../etc"))],
        ];
        for entries in cases {
            let err = check_all(entries).unwrap_err();
            assert!(
                matches!(err, PolicyError::EscapingLink { .. }),
                "{entries:?}: {err}"
            );
        }
        assert!(matches!(
            check_all(&[("a", Symlink, Some("/etc/passwd"))]),
            Err(PolicyError::AbsoluteLink { .. })
        ));
    }

    #[test]
    fn symlinks_inside_through_other_links_pass_and_loops_fail() {
        assert!(
            check_all(&[
                ("d/e/f", Regular, None),
                ("s", Symlink, Some("d/e")),
                ("l", Symlink, Some("s/../e/f"))
            ])
            .is_ok()
        );
        let err = check_all(&[("a", Symlink, Some("b")), ("b", Symlink, Some("a"))]).unwrap_err();
        assert!(matches!(err, PolicyError::LinkLoop { .. }), "{err}");
    }

    #[test]
    fn caps_hold() {
        let limits = Limits {
            max_entries: 2,
            max_unpacked_bytes: 15,
            max_path_bytes: 8,
        };
        let mut checker = Checker::new(limits);
        checker.check(b"a", Regular, 10, None).unwrap();
        assert!(matches!(
            checker.check(b"b", Regular, 10, None),
            Err(PolicyError::TooLarge { .. })
        ));
        let mut checker = Checker::new(limits);
        checker.check(b"a/", Directory, 0, None).unwrap();
        checker.check(b"b/", Directory, 0, None).unwrap();
        assert!(matches!(
            checker.check(b"c/", Directory, 0, None),
            Err(PolicyError::TooManyEntries { .. })
        ));
        let mut checker = Checker::new(limits);
        assert!(matches!(
            checker.check(b"123456789", Regular, 0, None),
            Err(PolicyError::PathTooLong { .. })
        ));
    }
}
