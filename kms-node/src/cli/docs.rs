//! The commands that describe the CLI itself, generated from its clap
//! definitions so that they cannot drift from it: `completions` (a shell
//! completion script, clap_complete) and `man` (man pages, clap_mangen).
//! The Debian package ships both (scripts/package.sh generates them with the
//! binary it packages).

use std::path::Path;

use clap::{CommandFactory, ValueEnum};
use serde_json::json;

use super::output::{Human, Out};
use super::Cli;

/// The shells `kms completions` writes a script for.
#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// `kms completions SHELL`: prints the completion script of SHELL for `kms`.
pub fn completions(out: &Out, shell: Shell) {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell.generator(), &mut cmd, "kms", &mut script);
    out.text(&String::from_utf8_lossy(&script));
}

/// `kms man --dir DIR`: writes `kms.1` and one page per subcommand
/// (`kms-server.1`, ...) to DIR (created if missing) and lists the files.
pub fn man(out: &Out, dir: &Path) -> Result<(), String> {
    let what = |e: std::io::Error| format!("cannot write the man pages to {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(what)?;
    // No help subcommand: `kms help` is not a page of its own. Building the
    // command gives each subcommand its display name (`kms-server`), which
    // names its page.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    write_pages(&cmd, dir, &mut pages).map_err(what)?;
    let names: Vec<String> = pages.iter().map(|p| p.display().to_string()).collect();
    out.show(json!({ "pages": names }), Human::Lines(names.clone()));
    Ok(())
}

/// Writes the page of `cmd` and of each of its visible subcommands, depth
/// first, appending each file written to `pages`.
fn write_pages(
    cmd: &clap::Command,
    dir: &Path,
    pages: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    pages.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, pages)?;
    }
    Ok(())
}
