//! The crate's modules import one another one way only: no loop of source files that
//! import each other (docs/ARCHITECTURE.md). Reads the `crate::`, `super::` and
//! `self::` paths of `src/` (each file's `#[cfg(test)] mod tests` aside), maps each
//! to the file that defines the module it names, and fails naming the files of every
//! loop, with the imports that tie it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["release", "pointer"]`; `[]` for lib.rs) → file, relative to `src/`.
type Files = BTreeMap<Vec<String>, PathBuf>;
/// File → the files it imports, with the names it takes from each.
type Graph = BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>>;

#[test]
fn no_source_files_import_each_other_in_a_loop() {
    // LAYERS_SRC: another tree's src/ (an older commit's, to see the check fail).
    let src = std::env::var_os("LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let files = files(&src);
    assert!(
        files.len() > 20,
        "read {} files from {}",
        files.len(),
        src.display()
    );
    let graph = graph(&src, &files);
    let loops = loops(&graph);
    let text: Vec<String> = loops.iter().map(|l| describe(l, &graph, &files)).collect();
    assert!(
        text.is_empty(),
        "modules import each other in a loop:\n{}",
        text.join("\n")
    );
}

/// The check finds a loop where there is one, through `super::` and braces too.
#[test]
fn a_loop_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod x;\nuse crate::b::{One, two::Three};\n",
    )
    .unwrap();
    std::fs::write(src.join("a/x.rs"), "pub fn f() { super::super::c::g() }\n").unwrap();
    std::fs::write(src.join("b.rs"), "// use crate::c::Nothing;\npub struct One;\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub fn g() {}\n#[cfg(test)]\nmod tests { use crate::a::x; }\n",
    )
    .unwrap();
    let files = files(src);
    let before = graph(src, &files);
    assert!(loops(&before).is_empty(), "{before:?}");
    std::fs::write(src.join("c.rs"), "pub fn g() { crate::b::One; }\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct One;\nfn h() { crate::a::x::f() }\n").unwrap();
    let graph = graph(src, &files);
    let loops = loops(&graph);
    assert_eq!(loops.len(), 1, "{graph:?}");
    let text = describe(&loops[0], &graph, &files);
    assert!(text.contains("a/x.rs -> c.rs: g"), "{text}");
    assert!(text.contains("c.rs -> b.rs: One"), "{text}");
    assert!(text.contains("b.rs -> a/x.rs: f"), "{text}");
}

fn files(src: &Path) -> Files {
    let mut files = Files::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                continue;
            }
            files.insert(module, path.strip_prefix(src).unwrap().to_path_buf());
        }
    }
    files
}

fn graph(src: &Path, files: &Files) -> Graph {
    let mut graph = Graph::new();
    for (module, path) in files {
        let text = code(&std::fs::read_to_string(src.join(path)).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for import in imports(&text) {
            let (base, rest) = resolve(module, &import);
            let mut full = base;
            full.extend(rest.iter().filter(|s| *s != "self" && *s != "*").cloned());
            let Some(target) = owner(files, &full) else {
                continue;
            };
            if target != *module {
                let names = edges.entry(target).or_default();
                names.extend(rest.last().filter(|n| !n.is_empty() && *n != "self").cloned());
            }
        }
    }
    graph
}

/// The code of a file without comments and without its test module (which, by the
/// house style, comes last).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with("'\"'") || rest.starts_with("'\\\"'") {
            // The character '"' is not a string.
            let end = rest[1..].find('\'').map_or(rest.len(), |e| e + 2);
            rest = &rest[end..];
        } else if let Some(after) = rest.strip_prefix("r#\"") {
            rest = after.find("\"#").map_or("", |end| &after[end + 2..]);
            out.push_str("\"\"");
        } else if rest.starts_with('"') {
            // A string's contents are no code (a "//" in one is not a comment).
            let end = string_end(rest);
            out.push_str("\"\"");
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    match find_test_module(&out) {
        Some(at) => out[..at].to_owned(),
        None => out,
    }
}

/// The byte after the closing quote of the string `text` starts with.
fn string_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn find_test_module(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let start = from + at;
        let after = code[start + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod tests") {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// Every path that starts with `crate::`, `super::` or `self::`, in `use` items (one
/// level of braces expanded) and in the code.
fn imports(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let item = &rest[at + 4..];
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = item.find(';') else { break };
        let used: String = item[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if !["crate::", "super::", "self::"]
            .iter()
            .any(|p| used.starts_with(p))
        {
            continue;
        }
        match used.find("::{") {
            Some(open) if used.ends_with('}') => {
                let head = &used[..open];
                for part in split_top(&used[open + 3..used.len() - 1]) {
                    let part = part.split("::{").next().unwrap_or("");
                    if !part.is_empty() {
                        found.push(segments(&format!("{head}::{part}")));
                    }
                }
            }
            _ => found.push(segments(&used)),
        }
    }
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let begin = from + at;
            from = begin + start.len();
            let before = code[..begin].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[begin..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(segments(path.trim_end_matches(':')));
        }
    }
    found
}

fn split_top(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The module an import starts from, and the rest of its path.
fn resolve(module: &[String], import: &[String]) -> (Vec<String>, Vec<String>) {
    let mut segs = import.to_vec();
    if segs.first().is_some_and(|s| s == "crate") {
        segs.remove(0);
        return (Vec::new(), segs);
    }
    // A file's own module is itself for `self::`; `super::` climbs from there.
    let mut base = module.to_vec();
    while let Some(first) = segs.first() {
        match first.as_str() {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        segs.remove(0);
    }
    (base, segs)
}

/// The longest prefix of `path` that is a file of the crate.
fn owner(files: &Files, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|p| files.contains_key(p))
}

/// The strongly connected components of more than one file (Tarjan's algorithm).
fn loops(graph: &Graph) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a Vec<String>) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[next].min(state.low[node]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.index[next].min(state.low[node]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.clone());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

fn describe(component: &[Vec<String>], graph: &Graph, files: &Files) -> String {
    let name = |m: &Vec<String>| files[m].display().to_string();
    let mut lines = vec![format!("a loop of {} files:", component.len())];
    for from in component {
        for (to, names) in &graph[from] {
            if component.contains(to) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                lines.push(format!("  {} -> {}: {}", name(from), name(to), names.join(", ")));
            }
        }
    }
    lines.join("\n")
}
