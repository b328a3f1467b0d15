//! The README documents what the binary does: every setting of `livectx serve` appears in it.

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn every_serve_setting_is_in_the_readme() {
    let help = Command::new(env!("CARGO_BIN_EXE_livectx"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let readme = readme();
    let mut checked = 0;
    for line in help.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("[env: ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                readme.contains(&format!("`{name}`")),
                "README does not document {name}"
            );
            checked += 1;
        }
        if let Some(flag) = line
            .strip_prefix("--")
            .map(|f| f.split([' ', '<']).next().unwrap_or(""))
        {
            assert!(
                readme.contains(&format!("`--{flag}`")),
                "README does not document --{flag}"
            );
        }
    }
    assert!(checked > 30, "parsed the help ({checked} settings)");
}
