//! The layer rule of `src/lib.rs`, checked over the source: every `crate::`, `super::` and
//! `self::` path in `src/**/*.rs` (in `use` trees and inline, test code included; comments and
//! strings ignored) is resolved to the module it names. The layer table is read from `lib.rs`'s
//! layout doc, so the doc and the check cannot drift. Fails when
//! - a top-level module imports one of a layer its row does not name (a layer above, or a
//!   sibling wing: `api` importing `ingest`);
//! - the top-level modules import each other in a cycle, even inside one layer;
//! - the submodules of one top-level module import each other in a cycle (`api::mcp` →
//!   `api::rest` → `api::openapi` → `api::mcp`); the parent's `mod.rs` is not counted, since a
//!   parent declaring its children and a child naming its parent's types is the normal shape;
//! - the table names a module that does not exist, or a module is missing from it.
//!
//! Run it alone: `cargo test --test api layers::`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// One row of the layer table.
#[derive(Debug, Clone)]
struct Layer {
    name: String,
    modules: Vec<String>,
    /// Names of the layers below this one that it may import.
    may_use: BTreeSet<String>,
}

/// Rows bottom first.
#[derive(Debug)]
struct Table {
    layers: Vec<Layer>,
}

impl Table {
    fn layer_of(&self, module: &str) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.modules.iter().any(|m| m == module))
    }
}

/// Parse the markdown table of `lib.rs` (`//! | layer | modules | may use |`, top row first).
/// "may use" is a comma-separated list of layer names, `every layer below`, or `—` for none.
fn parse_table(doc: &str) -> Result<Table, String> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let Some(text) = line.trim().strip_prefix("//!") else {
            continue;
        };
        let text = text.trim();
        if !text.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        let cells: Vec<&str> = text.trim_matches('|').split('|').map(str::trim).collect();
        if cells.first() == Some(&"layer") {
            in_table = true;
            continue;
        }
        if !in_table
            || cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        let [name, modules, may_use] = cells[..] else {
            return Err(format!("a layer row needs three cells: {text}"));
        };
        let modules: Vec<String> = modules
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        if modules.is_empty() {
            return Err(format!("layer {name} names no `module`"));
        }
        rows.push((name.to_string(), modules, may_use.to_string()));
    }
    if rows.is_empty() {
        return Err("no `| layer | modules | may use |` table in the layout doc".into());
    }
    rows.reverse();
    let mut layers: Vec<Layer> = Vec::new();
    for (name, modules, may_use) in rows {
        let below: BTreeSet<String> = layers.iter().map(|l| l.name.clone()).collect();
        let may_use: BTreeSet<String> = match may_use.as_str() {
            "every layer below" => below.clone(),
            "—" | "-" | "" => BTreeSet::new(),
            list => list.split(',').map(|s| s.trim().to_string()).collect(),
        };
        if let Some(up) = may_use.iter().find(|l| !below.contains(*l)) {
            return Err(format!(
                "layer {name} may use {up}, which is not a layer below it"
            ));
        }
        layers.push(Layer {
            name,
            modules,
            may_use,
        });
    }
    Ok(Table { layers })
}

/// The module path of a file under `src/` (`api/mcp.rs` → `[api, mcp]`, `lib.rs` → `[]`).
/// `None` for the binary's `main.rs`, which is another crate.
fn module_of(rel: &str) -> Option<Vec<String>> {
    if rel == "main.rs" || rel.starts_with("bin/") {
        return None;
    }
    let rel = rel.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    Some(parts)
}

#[derive(Debug, Clone, PartialEq)]
struct Tok {
    text: String,
    line: usize,
}

/// Identifiers and punctuation (`::` as one token), without comments, strings, char
/// literals and lifetimes.
fn tokens(source: &str) -> Vec<Tok> {
    let c: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skip a (raw) string body starting at the opening quote `c[i]`, with `hashes` `#`s.
    let skip_string = |i: &mut usize, line: &mut usize, raw: bool, hashes: usize| {
        *i += 1;
        while *i < c.len() {
            match c[*i] {
                '\n' => *line += 1,
                '\\' if !raw => *i += 1,
                '"' if (0..hashes).all(|k| c.get(*i + 1 + k) == Some(&'#')) => {
                    *i += 1 + hashes;
                    return;
                }
                _ => {}
            }
            *i += 1;
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            skip_string(&mut i, &mut line, false, 0);
        } else if ch == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1; // a lifetime or label: its name follows as an identifier
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let prefixed = matches!(word.as_str(), "r" | "br" | "cr" | "b" | "c");
            if prefixed && c.get(i) == Some(&'"') {
                skip_string(&mut i, &mut line, word.contains('r'), 0);
            } else if prefixed && word.contains('r') && c.get(i) == Some(&'#') {
                let mut hashes = 0;
                while c.get(i + hashes) == Some(&'#') {
                    hashes += 1;
                }
                if c.get(i + hashes) == Some(&'"') {
                    i += hashes;
                    skip_string(&mut i, &mut line, true, hashes);
                } else {
                    out.push(Tok { text: word, line }); // `r#ident`
                }
            } else if word == "b" && c.get(i) == Some(&'\'') {
                // a byte literal: let the char-literal branch skip it
            } else {
                out.push(Tok { text: word, line });
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Expand the `use` tree starting at `toks[*i]` into its paths.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    let mut path = prefix;
    while let Some(t) = toks.get(*i) {
        match t.text.as_str() {
            "::" => *i += 1,
            "{" => {
                *i += 1;
                while let Some(t) = toks.get(*i) {
                    match t.text.as_str() {
                        "}" => {
                            *i += 1;
                            break;
                        }
                        "," => *i += 1,
                        _ => use_tree(toks, i, path.clone(), out),
                    }
                }
                return;
            }
            "*" => {
                out.push((path, t.line));
                *i += 1;
                return;
            }
            "as" => {
                *i += 2;
            }
            text if is_ident(text) => {
                path.push(text.to_string());
                *i += 1;
                if toks.get(*i).map(|t| t.text.as_str()) != Some("::") {
                    if toks.get(*i).map(|t| t.text.as_str()) == Some("as") {
                        *i += 2;
                    }
                    out.push((path, t.line));
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Resolve a path as written in module `current` to an absolute module path; `None` for paths
/// that do not start at `crate`, `super` or `self` (extern crates, or local names).
fn resolve(current: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut segments = path.iter().peekable();
    let mut base: Vec<String> = match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        Some("self") => {
            segments.next();
            current.to_vec()
        }
        Some("super") => current.to_vec(),
        _ => return None,
    };
    while segments.peek().map(|s| s.as_str()) == Some("super") {
        segments.next();
        base.pop()?;
    }
    base.extend(segments.filter(|s| s.as_str() != "self").cloned());
    Some(base)
}

/// Every absolute path the file at module path `module` names, with its line.
fn references(module: &[String], source: &str) -> Vec<(Vec<String>, usize)> {
    let toks = tokens(source);
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new(); // inline `mod x {` and its brace depth
    let mut depth = 0usize;
    let mut i = 0;
    let current = |inline: &[(String, usize)]| -> Vec<String> {
        let mut m = module.to_vec();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < toks.len() {
        let text = toks[i].text.as_str();
        let prev = i.checked_sub(1).map(|p| toks[p].text.as_str());
        match text {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if toks.get(i + 2).map(|t| t.text.as_str()) == Some("{") => {
                inline.push((toks[i + 1].text.clone(), depth));
                depth += 1;
                i += 3;
                continue;
            }
            "use" if prev != Some("$") => {
                let mut paths = Vec::new();
                i += 1;
                use_tree(&toks, &mut i, Vec::new(), &mut paths);
                let here = current(&inline);
                out.extend(
                    paths
                        .into_iter()
                        .filter_map(|(p, line)| resolve(&here, &p).map(|p| (p, line))),
                );
                continue;
            }
            "crate" | "super" | "self"
                if prev != Some("$")
                    && prev != Some("::")
                    && toks.get(i + 1).map(|t| t.text.as_str()) == Some("::") =>
            {
                let line = toks[i].line;
                let mut path = vec![text.to_string()];
                i += 1;
                while toks.get(i).map(|t| t.text.as_str()) == Some("::")
                    && toks.get(i + 1).is_some_and(|t| is_ident(&t.text))
                {
                    path.push(toks[i + 1].text.clone());
                    i += 2;
                }
                if let Some(p) = resolve(&current(&inline), &path) {
                    out.push((p, line));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// An import edge between two modules, with one place that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Every cycle of `graph`, each once, as `a → b → … → a` with the evidence of each step.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut seen: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut found = Vec::new();
    for start in graph.keys() {
        // Shortest path from `start` back to itself.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue: VecDeque<&str> = VecDeque::from([start.as_str()]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    closing = Some(node);
                    break;
                }
                if !parent.contains_key(next.as_str()) {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let Some(mut node) = closing else { continue };
        let mut path = vec![start.as_str()];
        while node != start {
            path.push(node);
            node = parent[node];
        }
        path[1..].reverse();
        path.push(start);
        let members: BTreeSet<String> = path.iter().map(|s| s.to_string()).collect();
        if seen.insert(members) {
            let steps: Vec<String> = path
                .windows(2)
                .map(|w| format!("{} → {} ({})", w[0], w[1], graph[w[0]][w[1]]))
                .collect();
            found.push(format!("cycle: {}", steps.join(", ")));
        }
    }
    found
}

/// Every violation of `table` by `files` (paths relative to `src/`, and their text).
fn check(table: &Table, files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let modules: BTreeSet<Vec<String>> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let top: BTreeSet<&str> = modules
        .iter()
        .filter_map(|m| m.first().map(String::as_str))
        .collect();
    for m in &top {
        if table.layer_of(m).is_none() {
            problems.push(format!(
                "module `{m}` is in no layer of lib.rs's table: place it"
            ));
        }
    }
    for layer in &table.layers {
        for m in &layer.modules {
            if !top.contains(m.as_str()) {
                problems.push(format!(
                    "lib.rs's table names `{m}` (layer {}), which is not a module of src/",
                    layer.name
                ));
            }
        }
    }
    let mut graph = Graph::new();
    let mut inner: BTreeMap<String, Graph> = BTreeMap::new();
    for (rel, text) in files {
        let Some(from) = module_of(rel) else { continue };
        let Some(from_top) = from.first() else {
            continue; // lib.rs declares the modules and re-exports; it is the root of all
        };
        for (to, line) in references(&from, text) {
            let Some(to_top) = to.first() else { continue };
            let at = format!("src/{rel}:{line}");
            if !top.contains(to_top.as_str()) {
                problems.push(format!(
                    "{at}: `crate::{to_top}` goes through the crate root; name the module that defines it"
                ));
                continue;
            }
            if to_top != from_top {
                graph
                    .entry(from_top.clone())
                    .or_default()
                    .entry(to_top.clone())
                    .or_insert_with(|| at.clone());
                if let (Some(a), Some(b)) = (table.layer_of(from_top), table.layer_of(to_top)) {
                    let (la, lb) = (&table.layers[a], &table.layers[b]);
                    if a != b && !la.may_use.contains(&lb.name) {
                        let direction = if b > a { "above it" } else { "beside it" };
                        problems.push(format!(
                            "{at}: `{from_top}` (layer {}) imports `{to_top}` (layer {}, {direction})",
                            la.name, lb.name
                        ));
                    }
                }
            } else if let (Some(a), Some(b)) = (from.get(1), to.get(1))
                && a != b
                && modules.contains(&to[..2])
            {
                inner
                    .entry(from_top.clone())
                    .or_default()
                    .entry(format!("{from_top}::{a}"))
                    .or_default()
                    .entry(format!("{from_top}::{b}"))
                    .or_insert(at);
            }
        }
    }
    problems.dedup(); // one line naming a module twice (`use crate::x::{a, b}`) is one problem
    problems.extend(cycles(&graph));
    for sub in inner.values() {
        problems.extend(cycles(sub));
    }
    problems
}

/// Every `.rs` file under `dir`, relative to `root`.
fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            out.push((rel, text));
        }
    }
}

#[test]
fn imports_follow_the_layer_table_of_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let lib = files
        .iter()
        .find(|(p, _)| p == "lib.rs")
        .map(|(_, t)| t.clone())
        .expect("src/lib.rs");
    let table = parse_table(&lib).unwrap_or_else(|e| panic!("lib.rs's layer table: {e}"));
    let problems = check(&table, &files);
    assert!(
        problems.is_empty(),
        "{} layer violation(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[cfg(test)]
mod checker {
    use super::*;

    const TABLE: &str = "
//! | layer | modules | may use |
//! |-------|---------|---------|
//! | top   | `app` `cli` | every layer below |
//! | out   | `api`   | core, base |
//! | in    | `ingest` | core, base |
//! | core  | `session` | base |
//! | base  | `clock` | — |
";

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    fn run(list: &[(&str, &str)]) -> Vec<String> {
        let mut all = files(&[
            ("lib.rs", TABLE),
            ("app.rs", ""),
            ("cli.rs", ""),
            ("api/mod.rs", ""),
            ("ingest/mod.rs", ""),
            ("session/mod.rs", ""),
            ("clock.rs", ""),
        ]);
        for (p, t) in files(list) {
            all.retain(|(q, _)| *q != p);
            all.push((p, t));
        }
        check(&parse_table(TABLE).unwrap(), &all)
    }

    #[test]
    fn a_clean_tree_passes() {
        let problems = run(&[
            ("app.rs", "use crate::{api::Router, ingest::Ingestor};"),
            (
                "api/mod.rs",
                "use crate::session::store::Store;\nfn f() { crate::clock::now(); }",
            ),
            (
                "session/mod.rs",
                "pub mod store; use self::store::X; use super::clock;",
            ),
            ("session/store.rs", "use super::super::clock::now;"),
        ]);
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn an_import_of_a_layer_above_fails_with_its_place() {
        let problems = run(&[("session/store.rs", "\n\nuse crate::api::ApiState;")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(
                "src/session/store.rs:3: `session` (layer core) imports `api` (layer out, above it)"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn a_sibling_wing_is_refused_in_grouped_use_and_relative_paths() {
        let problems = run(&[
            (
                "api/mod.rs",
                "use crate::{session::X, ingest::{Ingestor, sse::Status}};",
            ),
            ("api/rest.rs", "fn f() { super::super::ingest::go(); }"),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("src/api/mod.rs:1: `api` (layer out) imports `ingest`"));
        assert!(problems[1].starts_with("src/api/rest.rs:1: `api` (layer out) imports `ingest`"));
        assert!(
            problems
                .iter()
                .all(|p| p.contains("imports `ingest` (layer in, beside it)"))
        );
    }

    #[test]
    fn comments_strings_and_macro_crate_paths_are_not_imports() {
        let problems = run(&[(
            "session/mod.rs",
            r##"// use crate::api::X;
/* crate::api::Y /* nested */ crate::api::Z */
/// [`crate::api`]
const A: &str = "crate::api::S \" crate::api::T";
const B: &str = r#"crate::api::R"#;
const C: char = '"'; const L: &'static str = "";
macro_rules! m { () => { $crate::api::M } }
use crate::clock::now;"##,
        )]);
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn a_cycle_between_top_level_modules_fails_even_within_one_layer() {
        let problems = run(&[
            ("app.rs", "use crate::cli::wait;"),
            ("cli.rs", "fn f() { crate::app::run(); }"),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("cycle: app → cli (src/app.rs:1), cli → app (src/cli.rs:1)"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_cycle_between_submodules_fails_but_parent_and_child_may_name_each_other() {
        let problems = run(&[
            (
                "api/mod.rs",
                "pub mod mcp; pub mod rest; pub mod openapi; use rest::X; use crate::api::mcp::Y;",
            ),
            (
                "api/mcp.rs",
                "use super::rest::Router; use super::ApiState;",
            ),
            ("api/rest.rs", "use crate::api::openapi::Doc;"),
            (
                "api/openapi.rs",
                "#[cfg(test)]\nmod tests { use super::super::mcp::Tool; }",
            ),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("api::mcp → api::rest (src/api/mcp.rs:1)"),
            "{problems:?}"
        );
        assert!(
            problems[0].contains("api::openapi → api::mcp (src/api/openapi.rs:2)"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_table_must_name_every_module_and_only_real_ones() {
        let problems = run(&[("demo/mod.rs", "")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`demo` is in no layer"),
            "{problems:?}"
        );
        let bad = "//! | layer | modules | may use |\n//! |--|--|--|\n//! | a | `x` | b |\n//! | b | `y` | a |";
        let err = parse_table(bad).unwrap_err();
        assert!(
            err.contains("layer b may use a, which is not a layer below it"),
            "{err}"
        );
    }
}
