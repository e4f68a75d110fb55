//! The `sealrelay` binary: the broker (`serve`) and the client commands. It only parses
//! arguments and wires the library together; see `cli` for the commands.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, naming what is wrong: the whole cause chain joined by ": ".
            eprintln!("sealrelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
