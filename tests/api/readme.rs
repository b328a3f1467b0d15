//! The README and the docs say what the binary and the repository really do: the quick start
//! is the two commands a fresh machine needs (and names every prerequisite CI installs or the
//! tests read), every setting of every command is in `docs/configuration.md`, every variable
//! the docs name exists, and the README stays short and indexes every doc.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use livectx::cli::Cli;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn readme() -> String {
    read("README.md")
}

/// The README's quick start: between its section markers.
fn quick_start() -> String {
    let readme = readme();
    let start = readme
        .find("<!-- section: quickstart -->")
        .expect("the README marks its quick start");
    let end = readme
        .find("<!-- /section: quickstart -->")
        .expect("the README marks the end of its quick start");
    readme[start..end].to_string()
}

/// The contents of every ```sh block of `text`.
fn shell_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Every Markdown file under docs/, sorted.
fn docs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_readme_is_short() {
    let lines = readme().lines().count();
    assert!(
        lines <= 200,
        "the README has {lines} lines; move detail to docs/"
    );
}

#[test]
fn the_readme_indexes_every_doc() {
    let readme = readme();
    for name in docs() {
        assert!(
            readme.contains(&format!("](docs/{name})")),
            "the README's index does not link docs/{name}"
        );
    }
}

/// The quick start is exactly two commands: the demo, and the test suite.
#[test]
fn the_quick_start_is_two_commands() {
    let blocks = shell_blocks(&quick_start());
    assert_eq!(
        blocks,
        [
            "cargo run --release -- demo",
            "LIVECTX_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test"
        ],
        "the quick start's commands"
    );
}

/// The demo command is one the binary accepts, and it plays the PostHog path (issue 13: the
/// quick start starts from PostHog).
#[cfg(feature = "tools")]
#[test]
fn the_quick_start_demo_parses_and_starts_from_posthog() {
    let command = &shell_blocks(&quick_start())[0];
    let args = command
        .strip_prefix("cargo run --release -- ")
        .expect("a cargo run command");
    let argv = std::iter::once("livectx").chain(args.split_whitespace());
    let cli = <Cli as clap::Parser>::try_parse_from(argv).expect("the binary accepts it");
    let livectx::cli::Command::Demo(demo) = cli.command else {
        panic!("{command} is not the demo")
    };
    assert_eq!(
        demo.source,
        livectx::demo::DemoSource::Posthog,
        "the demo's default source"
    );
}

/// A fresh machine needs what CI installs and what the tests read: the quick start names
/// every package `.ci/run` installs, every `LIVECTX_TEST_*` variable a test reads, and the
/// Rust version `Cargo.toml` requires; CI's test command is the same one.
#[test]
fn the_quick_start_names_every_prerequisite() {
    let quick_start = quick_start();
    let ci = read(".ci/run");
    let install = ci
        .lines()
        .find_map(|line| line.trim().strip_prefix("apt-get install -y "))
        .expect(".ci/run installs packages");
    for package in install.split_whitespace() {
        assert!(
            quick_start.contains(package),
            "the quick start does not name {package}, which .ci/run installs"
        );
    }
    assert!(
        ci.contains("LIVECTX_TEST_REDIS_URL:-redis://127.0.0.1:6379")
            && ci.lines().any(|l| l.trim().starts_with("cargo test")),
        ".ci/run runs the README's test command"
    );

    let mut variables = BTreeSet::new();
    for entry in walk(&root().join("tests")) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        variables.extend(names_with_prefix(&text, "LIVECTX_TEST_"));
    }
    assert!(
        variables.contains("LIVECTX_TEST_REDIS_URL"),
        "found the tests' variables: {variables:?}"
    );
    for variable in &variables {
        assert!(
            quick_start.contains(variable.as_str()),
            "the quick start does not name {variable}, which a test reads"
        );
    }

    let manifest = read("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .expect("Cargo.toml states rust-version")
        .trim_matches('"');
    assert!(
        quick_start.contains(&format!("Rust {version} or later")),
        "the quick start names Rust {version} (Cargo.toml's rust-version)"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// Every `PREFIX…` name in `text` (upper-case letters, digits and `_`).
fn names_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..len].to_string());
        }
        rest = &tail[len.max(1)..];
    }
    names
}

/// The commands that take settings, as `livectx --help` names them.
fn commands_with_settings() -> Vec<&'static str> {
    let mut commands = vec!["serve", "sign", "healthcheck", "connect posthog"];
    if cfg!(feature = "tools") {
        commands.extend(["demo", "simulate", "bench"]);
    }
    commands
}

/// Independently of the generator: every flag and environment variable each command's
/// `--help` prints is in docs/configuration.md.
#[test]
fn every_setting_is_in_configuration_md() {
    let doc = read("docs/configuration.md");
    let mut checked = 0;
    for command in commands_with_settings() {
        let help = Command::new(env!("CARGO_BIN_EXE_livectx"))
            .args(command.split(' '))
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "livectx {command} --help");
        let help = String::from_utf8(help.stdout).unwrap();
        assert!(
            doc.contains(&format!("## `livectx {command}`")),
            "docs/configuration.md has no section for livectx {command}"
        );
        for line in help.lines() {
            let line = line.trim();
            if let Some(at) = line.find("[env: ") {
                let name: String = line[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                assert!(
                    doc.contains(&format!("`{name}`")),
                    "docs/configuration.md does not document {name} (livectx {command})"
                );
                checked += 1;
            }
            if let Some(flag) = line
                .strip_prefix("--")
                .and_then(|f| f.split([' ', '<', ',']).next())
                .filter(|f| !["help", "version"].contains(f))
            {
                assert!(
                    doc.contains(&format!("`--{flag}`")),
                    "docs/configuration.md does not document --{flag} (livectx {command})"
                );
            }
        }
    }
    assert!(checked > 40, "parsed the help ({checked} settings)");
}

/// Variables the docs may name that are not settings of a command; each is really read by
/// the repository's code, tests or CI.
const OTHER_VARIABLES: [&str; 5] = [
    "LIVECTX_TEST_REDIS_URL",
    "LIVECTX_TEST_REDIS_CLUSTER_URL",
    "LIVECTX_BLESS_DOCS",
    "LIVECTX_CLUSTER_PORT_BASE",
    "AUTOPLAY_APP_UNKEY_TOKEN",
];

fn every_env(command: &clap::Command, out: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(env) = arg.get_env() {
            out.insert(env.to_string_lossy().into_owned());
        }
    }
    for sub in command.get_subcommands() {
        every_env(sub, out);
    }
}

/// A doc that names `LIVECTX_SOMETHING` names a real setting (or one of the few variables
/// read elsewhere): a renamed or removed setting cannot live on in the docs. A name ending in
/// `_` (as in `LIVECTX_LLM_*`) must be the prefix of a real one.
#[test]
fn every_variable_the_docs_name_exists() {
    let mut known = BTreeSet::new();
    every_env(&Cli::command(), &mut known);
    let mut sources = String::new();
    for dir in ["src", "tests", "fuzz"] {
        for file in walk(&root().join(dir)) {
            sources.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
    }
    sources.push_str(&read(".ci/run"));
    sources.push_str(&read(".ci/redis-cluster.sh"));
    for name in OTHER_VARIABLES {
        assert!(
            sources.contains(name),
            "{name} is allowed in the docs but nothing reads it any more"
        );
        known.insert(name.to_string());
    }

    let mut files = vec!["README.md".to_string()];
    files.extend(docs().into_iter().map(|name| format!("docs/{name}")));
    let mut checked = 0;
    for file in files {
        let text = read(&file);
        for prefix in ["LIVECTX_", "AUTOPLAY_", "OPENAI_", "POSTHOG_"] {
            for name in names_with_prefix(&text, prefix) {
                checked += 1;
                let exists = if name.ends_with('_') {
                    known
                        .iter()
                        .any(|k| k.starts_with(&name) && k.len() > name.len())
                } else {
                    known.contains(&name)
                };
                assert!(exists, "{file} names {name}, which no command reads");
            }
        }
    }
    assert!(checked > 50, "checked {checked} names");
}

#[test]
fn names_are_found_whole() {
    let names = names_with_prefix(
        "`LIVECTX_API_KEY`, XLIVECTX_NO, LIVECTX_LLM_* and LIVECTX_TEST_REDIS_URL=1",
        "LIVECTX_",
    );
    let expected: BTreeSet<String> = ["LIVECTX_API_KEY", "LIVECTX_LLM_", "LIVECTX_TEST_REDIS_URL"]
        .map(String::from)
        .into();
    assert_eq!(names, expected);
}

/// Every `cargo test --test <name>` the docs show runs a test target that exists
/// (`tests/<name>.rs` or `tests/<name>/main.rs`), so a moved test cannot leave a dead command.
#[test]
fn every_test_target_the_docs_name_exists() {
    let mut files = vec!["README.md".to_string()];
    files.extend(docs().into_iter().map(|name| format!("docs/{name}")));
    let mut checked = 0;
    for file in files {
        let text = read(&file);
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] != "--test" {
                continue;
            }
            let name = pair[1].trim_end_matches(['`', ')', '.', ',']);
            let exists = root().join(format!("tests/{name}.rs")).exists()
                || root().join(format!("tests/{name}/main.rs")).exists();
            assert!(
                exists,
                "{file} runs `cargo test --test {name}`: no such test target"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "checked {checked} test commands");
}
