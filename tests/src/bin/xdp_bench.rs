//! `xdp_bench`: the measuring program behind `cargo xtask bench xdp` (see `tests/src/bench`).
//! Runs as root; writes `xdp.json` and `xdp.md` and prints the markdown table.

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    match bench::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdp_bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
