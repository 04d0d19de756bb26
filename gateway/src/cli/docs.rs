//! Generated shell completions and man page, from the same clap definition as the CLI.

use clap::CommandFactory as _;

use super::Cli;

pub(super) fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "gateway",
        &mut std::io::stdout(),
    );
}

pub(super) fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(())
}
