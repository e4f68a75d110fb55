//! The `sealrelay` binary: the broker (`serve`) and the client commands. It only parses
//! arguments and wires the library together; see `cli` for the commands.

mod cli;

use std::process::ExitCode;

/// Every block this process frees is wiped first: the broker's copies of login secrets made
/// by the libraries it parses them with, and the CLI's of passwords, go with the memory that
/// held them (docs/security.md).
#[global_allocator]
static ALLOCATOR: sealrelay_broker::memory::WipeOnFree = sealrelay_broker::memory::WipeOnFree;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, naming what is wrong: the cause chain joined by ": ", skipping a
            // cause whose text an outer message already quotes.
            let mut line = e.to_string();
            for cause in e.chain().skip(1).map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            // Several problems (a config with more than one mistake): one line each.
            for part in line.lines() {
                eprintln!("sealrelay: {part}");
            }
            ExitCode::FAILURE
        }
    }
}
