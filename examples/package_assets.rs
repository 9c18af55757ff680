//! Writes what the `.deb` ships besides the binary, from the clap definitions the
//! binary itself parses with, so they cannot drift: man pages (`bootlace.1`, and one
//! per command: `bootlace-run.1`, `bootlace-release-push.1`, …) and bash, zsh and fish
//! completions. `scripts/package.sh` runs it before `cargo deb`.
//!
//! cargo run --example package_assets -- OUT_DIR   (writes OUT_DIR/man, OUT_DIR/completions)

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: package_assets OUT_DIR"))?;
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    }
    clap_mangen::generate_to(bootlace::cli::Cli::command(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(
            shell,
            &mut bootlace::cli::Cli::command(),
            "bootlace",
            &completions,
        )?;
    }
    Ok(())
}
