//! `docs/configuration.md` is generated from the command line itself, so it cannot drift: this
//! test walks clap's `Command` (every subcommand that takes settings, each setting's flag,
//! environment variable, default and help) into Markdown, and fails when the file's generated
//! part differs. To change a setting's text, edit its doc comment in `src/`, then run
//! `LIVECTX_BLESS_DOCS=1 cargo test --test api config_doc::` to rewrite the file.
//!
//! Only with the `tools` feature (the default): without it, `demo`, `simulate` and `bench` do
//! not exist and the generated text would lack their sections.
#![cfg(feature = "tools")]

use clap::{Arg, ArgAction, Command, CommandFactory};
use livectx::cli::Cli;

const BEGIN: &str =
    "<!-- generated from the command line by tests/api/config_doc.rs: do not edit by hand -->";
const END: &str = "<!-- end of the generated part -->";

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md")
}

#[test]
fn configuration_md_is_generated_from_the_command_line() {
    let generated = markdown(&Cli::command());
    let path = path();
    let current = std::fs::read_to_string(&path).expect("docs/configuration.md exists");
    let (before, rest) = current
        .split_once(BEGIN)
        .unwrap_or_else(|| panic!("docs/configuration.md lacks the line {BEGIN}"));
    let (old, after) = rest
        .split_once(END)
        .unwrap_or_else(|| panic!("docs/configuration.md lacks the line {END}"));
    let new = format!("\n{generated}");
    if old == new {
        return;
    }
    if std::env::var_os("LIVECTX_BLESS_DOCS").is_some_and(|v| v == "1") {
        std::fs::write(&path, format!("{before}{BEGIN}{new}{END}{after}")).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let first_difference = old
        .lines()
        .zip(new.lines())
        .find(|(a, b)| a != b)
        .map_or_else(
            || "one is a prefix of the other".to_string(),
            |(a, b)| format!("file:      {a}\ngenerated: {b}"),
        );
    panic!(
        "docs/configuration.md is out of date with the command line; run \
         `LIVECTX_BLESS_DOCS=1 cargo test --test api config_doc::` and commit the result.\n\
         First difference:\n{first_difference}"
    );
}

/// The generated part: one section per command that takes settings, in the order `--help`
/// lists them, with one table row per setting.
fn markdown(root: &Command) -> String {
    let mut out = String::new();
    let root_name = root.get_name().to_string();
    section(root, &root_name, &mut out);
    out
}

fn section(command: &Command, path: &str, out: &mut String) {
    let settings: Vec<&Arg> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !["help", "version"].contains(&arg.get_id().as_str()))
        .collect();
    if !settings.is_empty() {
        out.push_str(&format!("## `{path}`\n\n"));
        if let Some(about) = command.get_long_about().or(command.get_about()) {
            out.push_str(&format!("{}\n\n", escape(&sentence(&about.to_string()))));
        }
        out.push_str("| Flag | Environment variable | Default | What it does |\n");
        out.push_str("|---|---|---|---|\n");
        for arg in settings {
            out.push_str(&row(arg));
        }
        out.push('\n');
    }
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        section(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn row(arg: &Arg) -> String {
    let flag = match arg.get_long() {
        Some(long) => format!("`--{long}`"),
        None => {
            let name = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| arg.get_id().to_string(), ToString::to_string);
            format!("`<{name}>` (positional)")
        }
    };
    let env = arg.get_env().map_or_else(
        || "—".to_string(),
        |env| format!("`{}`", env.to_string_lossy()),
    );
    let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let default = if is_switch {
        "off".to_string()
    } else if defaults.is_empty() {
        if arg.is_required_set() {
            "required".to_string()
        } else {
            "—".to_string()
        }
    } else {
        format!("`{}`", defaults.join(","))
    };
    let mut help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| sentence(&h.to_string()))
        .unwrap_or_default();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !values.is_empty() && !is_switch {
        help.push_str(&format!(" One of {}.", values.join(", ")));
    }
    if arg.get_value_delimiter() == Some(',') && !help.to_lowercase().contains("comma-separated") {
        help.push_str(" Comma-separated.");
    }
    format!("| {flag} | {env} | {default} | {} |\n", escape(help.trim()))
}

/// Help text on one line, paragraphs joined, ending with a full stop (clap drops the one of
/// a one-line help).
fn sentence(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !line.is_empty() && !line.ends_with('.') {
        line.push('.');
    }
    line
}

/// Characters that would change a table cell's meaning on GitHub: `|` ends the cell (also in
/// a code span), and outside code spans `<key>` would be read as an HTML tag and `*` as
/// emphasis. Inside a code span a backslash would show, so `<` and `*` stay as they are there.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => in_code = !in_code,
            '|' => out.push('\\'),
            '<' | '*' if !in_code => out.push('\\'),
            _ => {}
        }
        out.push(c);
    }
    out
}

#[test]
fn the_generator_covers_every_kind_of_setting() {
    let command = Command::new("tool")
        .about("A tool.")
        .arg(
            Arg::new("listen")
                .long("listen")
                .env("T_LISTEN")
                .default_value("127.0.0.1:1")
                .help("Where | to <listen> (`<addr>`)"),
        )
        .arg(
            Arg::new("key")
                .long("key")
                .env("T_KEY")
                .value_delimiter(',')
                .help("Keys"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_parser(["text", "json"])
                .default_value("text")
                .help("Format"),
        )
        .arg(
            Arg::new("on")
                .long("on")
                .action(ArgAction::SetTrue)
                .help("A switch."),
        )
        .arg(Arg::new("id").required(true).help("Positional."))
        .arg(Arg::new("secret").long("secret").hide(true))
        .subcommand(Command::new("child").arg(Arg::new("n").long("n").help("Count.")))
        .subcommand(Command::new("empty"));
    assert_eq!(
        markdown(&command),
        "## `tool`\n\nA tool.\n\n\
         | Flag | Environment variable | Default | What it does |\n|---|---|---|---|\n\
         | `--listen` | `T_LISTEN` | `127.0.0.1:1` | Where \\| to \\<listen> (`<addr>`). |\n\
         | `--key` | `T_KEY` | — | Keys. Comma-separated. |\n\
         | `--format` | — | `text` | Format. One of `text`, `json`. |\n\
         | `--on` | — | off | A switch. |\n\
         | `<id>` (positional) | — | required | Positional. |\n\n\
         ## `tool child`\n\n\
         | Flag | Environment variable | Default | What it does |\n|---|---|---|---|\n\
         | `--n` | — | — | Count. |\n\n"
    );
}

#[test]
fn every_command_with_settings_has_a_section() {
    let generated = markdown(&Cli::command());
    for command in [
        "serve",
        "sign",
        "healthcheck",
        "connect posthog",
        "demo",
        "simulate",
    ] {
        assert!(
            generated.contains(&format!("## `livectx {command}`")),
            "no section for livectx {command}"
        );
    }
    assert!(generated.contains("| `--ingest-secret` | `LIVECTX_INGEST_SECRET` |"));
    assert!(
        !generated.contains("bench-loadgen"),
        "hidden commands stay out"
    );
}
