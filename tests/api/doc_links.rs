//! Every relative link in the README and `docs/` resolves: the file (or directory) exists, and a
//! `#anchor` names a heading of the target Markdown file, slugged the way GitHub does. Docs
//! move between files; this test is what keeps the links between them from rotting.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// The Markdown files whose links are checked: the README and everything in `docs/`.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = documents(root);
    assert!(files.len() > 10, "found the docs: {files:?}");
    let mut links = 0;
    let broken = broken_links(root, &files, &mut links);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(links > 50, "checked {links} relative links");
}

/// Every broken relative link of `files`, as `file: target (why)`; counts the links checked.
fn broken_links(root: &Path, files: &[PathBuf], checked: &mut usize) -> Vec<String> {
    let mut anchors_of: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("readable Markdown");
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if is_external(&target) {
                continue;
            }
            *checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().expect("a file has a directory").join(path))
            };
            if !resolved.starts_with(root) {
                broken.push(format!("{shown}: {target} (leaves the repository)"));
                continue;
            }
            if !resolved.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.extension().is_none_or(|ext| ext != "md") {
                broken.push(format!(
                    "{shown}: {target} (an anchor into a file that is not Markdown)"
                ));
                continue;
            }
            let anchors = anchors_of.entry(resolved.clone()).or_insert_with(|| {
                anchors(&std::fs::read_to_string(&resolved).expect("readable Markdown"))
            });
            if !anchors.contains(anchor) {
                broken.push(format!("{shown}: {target} (no heading with that anchor)"));
            }
        }
    }
    broken
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// `a/b/../c` → `a/c`, without touching the file system (a missing file must still resolve).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lines of `text` outside fenced code blocks, with inline code spans removed: a link
/// shown as code is not a link.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if let Some(marker) = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m)) {
            fence = Some(marker);
            continue;
        }
        lines.push(without_code_spans(line));
    }
    lines
}

fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Targets of inline links and images (`[text](target)`), reference definitions
/// (`[label]: target`) and HTML `href`/`src` attributes.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((_, rest)) = trimmed.split_once("]:")
        {
            if let Some(target) = rest.split_whitespace().next() {
                targets.push(target.trim_matches(['<', '>']).to_string());
            }
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let inside = after[..end].trim();
            let target = inside.split_whitespace().next().unwrap_or("");
            targets.push(target.trim_matches(['<', '>']).to_string());
            rest = &after[end..];
        }
        for attribute in ["href=\"", "src=\""] {
            let mut rest = line.as_str();
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let end = after.find('"').unwrap_or(after.len());
                targets.push(after[..end].to_string());
                rest = &after[end..];
            }
        }
    }
    targets
}

/// The anchors a Markdown file offers: its headings' GitHub slugs (a repeated heading gets
/// `-1`, `-2`, ...), and explicit `<a id="...">` / `<a name="...">` targets.
fn anchors(text: &str) -> HashSet<String> {
    let mut anchors = HashSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if let Some(marker) = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m)) {
            fence = Some(marker);
            continue;
        }
        for attribute in ["<a id=\"", "<a name=\""] {
            let mut rest = line;
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let end = after.find('"').unwrap_or(after.len());
                anchors.insert(after[..end].to_string());
                rest = &after[end..];
            }
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&level) || !line[level..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[level..]);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

/// GitHub's heading slug: the heading's text (link targets dropped), lower-cased; letters,
/// digits, `-` and `_` kept, spaces turned into `-`, everything else dropped.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading.trim();
    // `[text](target)` contributes only its text.
    while let Some(at) = rest.find("](") {
        text.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        rest = after.find(')').map_or("", |end| &after[end + 1..]);
    }
    text.push_str(rest);
    text.chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug(" Quick start"), "quick-start");
    assert_eq!(slug(" `livectx serve`"), "livectx-serve");
    assert_eq!(
        slug(" Summaries: built-in or an LLM"),
        "summaries-built-in-or-an-llm"
    );
    assert_eq!(
        slug(" 1. Run a livectx that Dify can reach"),
        "1-run-a-livectx-that-dify-can-reach"
    );
    assert_eq!(slug(" See [the code](src/lib.rs) now"), "see-the-code-now");
    assert_eq!(
        slug(" LIVECTX_API_KEY / --api-key"),
        "livectx_api_key----api-key"
    );
    let anchors = anchors("# A\n## A\n```sh\n# A\n```\n<a id=\"x\"></a>\n## B\n#not-a-heading\n");
    let expected: HashSet<String> = ["a", "a-1", "x", "b"].map(String::from).into();
    assert_eq!(anchors, expected);
}

#[test]
fn links_in_code_are_not_links() {
    let text = "See [one](a.md) and `[two](b.md)`.\n```md\n[three](c.md)\n```\n\
                ![img](d.png) <a href=\"e.md#x\">e</a>\n[ref]: f.md#y\n[ext](https://x.io/a)";
    assert_eq!(
        link_targets(text),
        ["a.md", "d.png", "e.md#x", "f.md#y", "https://x.io/a"]
    );
}

/// The checker itself finds what is broken (so a pass above means something).
#[test]
fn the_checker_reports_missing_files_and_anchors() {
    let root = std::env::temp_dir().join(format!("livectx-doc-links-{}", std::process::id()));
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Top\n## Part two\n[ok](docs/a.md#section) [ok](#part-two) [ok](docs)\n\
         [bad](docs/missing.md) [bad](docs/a.md#nowhere) [bad](#top-1) [bad](../outside.md)\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("a.md"),
        "## Section\n[ok](../README.md#top) [bad](a.md#L3x)\n",
    )
    .unwrap();
    let mut checked = 0;
    let broken = broken_links(
        &root,
        &[root.join("README.md"), docs.join("a.md")],
        &mut checked,
    );
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(checked, 9);
    let targets: Vec<&str> = broken
        .iter()
        .map(|line| line.split(": ").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "docs/missing.md",
            "docs/a.md#nowhere",
            "#top-1",
            "../outside.md",
            "a.md#L3x"
        ]
    );
}
