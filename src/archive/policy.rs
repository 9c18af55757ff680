//! The unpack policy (DESIGN §5), applied entry by entry to any tar stream: at push
//! time to refuse a hostile archive early, at deploy time before anything is written.
//!
//! Allowed: regular files, directories, and symlinks that are relative and resolve
//! inside the release. Everything else rejects the whole archive: hard links, devices,
//! FIFOs, absolute paths, `..`, duplicate paths, entries under a symlink, and archives
//! past the caps. A leading `./` is normal.

use std::collections::HashMap;

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

/// Symlinks resolve through at most this many links in all, as the kernel's own limit.
const MAX_LINK_FOLLOWS: usize = 40;
/// Components in one path; deeper trees are not releases.
const MAX_DEPTH: usize = 256;

/// Why an archive is refused. Each names the entry.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("entry {path}: absolute paths are not allowed")]
    Absolute { path: String },
    #[error("entry {path}: `..` is not allowed in paths")]
    ParentDir { path: String },
    #[error("entry {path}: path is longer than {max} bytes or {MAX_DEPTH} components")]
    PathTooLong { path: String, max: usize },
    #[error("entry {path}: path is not UTF-8")]
    NotUtf8 { path: String },
    #[error("entry {path}: {kind} entries are not allowed")]
    Kind { path: String, kind: String },
    #[error("entry {path}: a {kind} entry must not carry data")]
    DataOnNonFile { path: String, kind: &'static str },
    #[error("entry {path}: appears twice")]
    Duplicate { path: String },
    #[error("entry {path}: lies under {link}, which is a {kind}, not a directory")]
    UnderSymlink {
        path: String,
        link: String,
        kind: &'static str,
    },
    #[error("entry {path}: symlink target {target} is absolute")]
    AbsoluteLink { path: String, target: String },
    #[error("entry {path}: symlink target {target} resolves outside the release")]
    EscapingLink { path: String, target: String },
    #[error("entry {path}: symlink target {target} loops or follows more than {MAX_LINK_FOLLOWS} links")]
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

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
        }
    }
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

/// One path of the release as the archive builds it.
#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Given by an entry, not only implied as a parent.
    explicit: bool,
    parent: usize,
    name: String,
    link: Option<String>,
}

const ROOT: usize = 0;

/// Checks the entries of one archive, in order. The release's tree is kept as a trie
/// of node ids, so each entry costs time in proportion to its own path.
#[derive(Debug)]
pub struct Checker {
    limits: Limits,
    entries: u64,
    totals: Totals,
    nodes: Vec<Node>,
    children: HashMap<(usize, String), usize>,
    links: Vec<usize>,
}

impl Checker {
    pub fn new(limits: Limits) -> Self {
        let root = Node {
            kind: Kind::Directory,
            explicit: true,
            parent: ROOT,
            name: String::new(),
            link: None,
        };
        Self {
            limits,
            entries: 0,
            totals: Totals::default(),
            nodes: vec![root],
            children: HashMap::new(),
            links: Vec::new(),
        }
    }

    /// Counts an entry that holds no file (a PAX global header) against the caps.
    pub fn count(&mut self) -> Result<(), PolicyError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(PolicyError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Checks one entry. `entry_type` is the tar type; `size` the data size; `link` the
    /// symlink target.
    pub fn check(
        &mut self,
        raw_path: &[u8],
        entry_type: tar::EntryType,
        size: u64,
        link: Option<&[u8]>,
    ) -> Result<Checked, PolicyError> {
        let shown = shown(raw_path);
        self.count()?;
        if raw_path.len() > self.limits.max_path_bytes {
            let max = self.limits.max_path_bytes;
            return Err(PolicyError::PathTooLong { path: shown, max });
        }
        let kind = kind_of(entry_type).ok_or_else(|| PolicyError::Kind {
            path: shown.clone(),
            kind: kind_name(entry_type),
        })?;
        if kind != Kind::File && size > 0 {
            return Err(PolicyError::DataOnNonFile {
                path: shown,
                kind: kind.name(),
            });
        }
        let components = components(raw_path).map_err(|make| make(shown.clone()))?;
        if components.len() > MAX_DEPTH {
            let max = self.limits.max_path_bytes;
            return Err(PolicyError::PathTooLong { path: shown, max });
        }
        let Some((last, parents)) = components.split_last() else {
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
        };
        let parent = self.parents(parents, &shown)?;
        let target = match kind {
            Kind::Symlink => Some(self.link_target(link, &shown)?),
            _ => None,
        };
        self.place(parent, last, kind, target, &shown)?;
        if kind == Kind::File {
            self.totals.files += 1;
            self.totals.unpacked_bytes = self.totals.unpacked_bytes.saturating_add(size);
            if self.totals.unpacked_bytes > self.limits.max_unpacked_bytes {
                let max = self.limits.max_unpacked_bytes;
                return Err(PolicyError::TooLarge { max });
            }
        }
        Ok(Checked {
            path: components.join("/"),
            kind,
        })
    }

    /// The node of the entry's parent directory, creating implied directories; every
    /// parent must be a directory, never a symlink or a file.
    fn parents(&mut self, parents: &[&str], shown: &str) -> Result<usize, PolicyError> {
        let mut at = ROOT;
        for name in parents {
            at = match self.children.get(&(at, (*name).to_owned())) {
                Some(&child) if self.nodes[child].kind == Kind::Directory => child,
                Some(&child) => {
                    return Err(PolicyError::UnderSymlink {
                        path: shown.to_owned(),
                        link: format!("{:?}", self.path_of(child)),
                        kind: self.nodes[child].kind.name(),
                    });
                }
                None => self.add(at, name, Kind::Directory, false, None),
            };
        }
        Ok(at)
    }

    /// Records the entry itself: a second entry at the same path is refused, except a
    /// directory given explicitly after its children implied it.
    fn place(
        &mut self,
        parent: usize,
        name: &str,
        kind: Kind,
        link: Option<String>,
        shown: &str,
    ) -> Result<(), PolicyError> {
        match self.children.get(&(parent, name.to_owned())) {
            None => {
                self.add(parent, name, kind, true, link);
                Ok(())
            }
            Some(&existing) => {
                let node = &mut self.nodes[existing];
                if kind == Kind::Directory && node.kind == Kind::Directory && !node.explicit {
                    node.explicit = true;
                    Ok(())
                } else {
                    Err(PolicyError::Duplicate {
                        path: shown.to_owned(),
                    })
                }
            }
        }
    }

    fn add(&mut self, parent: usize, name: &str, kind: Kind, explicit: bool, link: Option<String>) -> usize {
        let id = self.nodes.len();
        if link.is_some() {
            self.links.push(id);
        }
        self.nodes.push(Node {
            kind,
            explicit,
            parent,
            name: name.to_owned(),
            link,
        });
        self.children.insert((parent, name.to_owned()), id);
        id
    }

    fn link_target(&self, link: Option<&[u8]>, shown: &str) -> Result<String, PolicyError> {
        let raw = link.unwrap_or_default();
        let target = std::str::from_utf8(raw)
            .map_err(|_| PolicyError::NotUtf8 {
                path: shown.to_owned(),
            })?
            .to_owned();
        if target.starts_with('/') {
            return Err(PolicyError::AbsoluteLink {
                path: shown.to_owned(),
                target,
            });
        }
        if target.is_empty() || target.len() > self.limits.max_path_bytes {
            return Err(PolicyError::EscapingLink {
                path: shown.to_owned(),
                target,
            });
        }
        Ok(target)
    }

    fn path_of(&self, mut id: usize) -> String {
        let mut parts = Vec::new();
        while id != ROOT {
            parts.push(self.nodes[id].name.as_str());
            id = self.nodes[id].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Checks what needs the whole archive: every symlink resolves inside the release.
    pub fn finish(self) -> Result<Totals, PolicyError> {
        for &id in &self.links {
            let node = &self.nodes[id];
            let target = node.link.as_deref().unwrap_or_default();
            let mut follows = MAX_LINK_FOLLOWS;
            let mut at = self.stack_of(node.parent);
            let error = match self.resolve(&mut at, target, &mut follows) {
                Ok(()) => continue,
                Err(Unresolved::Escapes) => PolicyError::EscapingLink {
                    path: format!("{:?}", self.path_of(id)),
                    target: target.to_owned(),
                },
                Err(Unresolved::Loops) => PolicyError::LinkLoop {
                    path: format!("{:?}", self.path_of(id)),
                    target: target.to_owned(),
                },
            };
            return Err(error);
        }
        Ok(self.totals)
    }

    /// The directory stack from the root to `id` (the root itself is the empty stack).
    fn stack_of(&self, mut id: usize) -> Vec<Option<usize>> {
        let mut stack = Vec::new();
        while id != ROOT {
            stack.push(Some(id));
            id = self.nodes[id].parent;
        }
        stack.reverse();
        stack
    }

    /// Resolves `target` from the directory `at`, as the kernel would once unpacked,
    /// following the archive's own symlinks with one budget for the whole resolution.
    /// Names the archive does not hold are kept as unknown directories, so that a `..`
    /// after them is still counted.
    fn resolve(
        &self,
        at: &mut Vec<Option<usize>>,
        target: &str,
        follows: &mut usize,
    ) -> Result<(), Unresolved> {
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    at.pop().ok_or(Unresolved::Escapes)?;
                }
                name => {
                    let parent = at.last().copied().unwrap_or(Some(ROOT));
                    let child = parent.and_then(|p| self.children.get(&(p, name.to_owned())).copied());
                    match child.map(|c| (c, &self.nodes[c])) {
                        Some((_, Node { link: Some(next), .. })) => {
                            *follows = follows.checked_sub(1).ok_or(Unresolved::Loops)?;
                            self.resolve(at, next, follows)?;
                        }
                        Some((c, _)) => at.push(Some(c)),
                        None => at.push(None),
                    }
                }
            }
        }
        Ok(())
    }
}

enum Unresolved {
    Escapes,
    Loops,
}

/// Splits a tar path into normal components; `./` and empty components are dropped.
fn components(raw: &[u8]) -> Result<Vec<&str>, fn(String) -> PolicyError> {
    if raw.starts_with(b"/") {
        return Err(|path| PolicyError::Absolute { path });
    }
    let text = std::str::from_utf8(raw)
        .map_err(|_| (|path| PolicyError::NotUtf8 { path }) as fn(String) -> PolicyError)?;
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(|path| PolicyError::ParentDir { path }),
            name => parts.push(name),
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
            let size = if *kind == Regular { 10 } else { 0 };
            checker.check(path.as_bytes(), *kind, size, link.map(str::as_bytes))?;
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
    fn rejects_exponential_symlink_chains_quickly() {
        // l1 names l0 ten times, l2 names l1 ten times, ...: 10^10 follows unbounded.
        let mut entries: Vec<(String, tar::EntryType, Option<String>)> =
            vec![("l0".into(), Symlink, Some(".".into()))];
        for level in 1..=10 {
            let target = vec![format!("l{}", level - 1); 10].join("/");
            entries.push((format!("l{level}"), Symlink, Some(target)));
        }
        let started = std::time::Instant::now();
        let mut checker = Checker::new(Limits::default());
        for (path, kind, link) in &entries {
            checker
                .check(path.as_bytes(), *kind, 0, link.as_deref().map(str::as_bytes))
                .unwrap();
        }
        let err = checker.finish().unwrap_err();
        assert!(matches!(err, PolicyError::LinkLoop { .. }), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn deep_paths_cost_little_and_are_capped() {
        let deep = vec!["a"; 2000].join("/");
        let mut checker = Checker::new(Limits::default());
        let err = checker.check(deep.as_bytes(), Regular, 0, None).unwrap_err();
        assert!(matches!(err, PolicyError::PathTooLong { .. }), "{err}");
        let ok = vec!["a"; 200].join("/");
        for i in 0..200 {
            checker
                .check(format!("{ok}/f{i}").as_bytes(), Regular, 0, None)
                .unwrap();
        }
        assert_eq!(checker.nodes.len(), 1 + 200 + 200);
    }

    #[test]
    fn rejects_data_on_directories_and_symlinks_and_non_utf8_names() {
        let mut checker = Checker::new(Limits::default());
        assert!(matches!(
            checker.check(b"d/", Directory, 1 << 40, None),
            Err(PolicyError::DataOnNonFile { .. })
        ));
        assert!(matches!(
            checker.check(b"s", Symlink, 10, Some(b"x")),
            Err(PolicyError::DataOnNonFile { .. })
        ));
        assert!(matches!(
            checker.check(b"bad\xff", Regular, 0, None),
            Err(PolicyError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn missing_names_still_count_for_parent_steps() {
        // "ghost" is not in the archive; "ghost/../../x" still leaves the release.
        let err = check_all(&[("l", Symlink, Some("ghost/../../x"))]).unwrap_err();
        assert!(matches!(err, PolicyError::EscapingLink { .. }), "{err}");
        assert!(check_all(&[("l", Symlink, Some("ghost/../x"))]).is_ok());
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
