//! `sealrelay-load`: run one scenario and print (or write) its report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sealrelay_load::{run, Scenario};

/// Scripted load for sealrelay (sealed envelopes through the SDK) or, with --plain, for any
/// MQTT broker. Loopback only: point it at a broker on this machine.
#[derive(Parser)]
#[command(name = "sealrelay-load", version)]
struct Cli {
    #[command(flatten)]
    scenario: Scenario,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero if any QoS 1 message was lost or any error occurred.
    #[arg(long)]
    assert_no_loss: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match run(&cli.scenario).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("sealrelay-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!();
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).expect("report serialises");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("sealrelay-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if cli.assert_no_loss && (report.lost > 0 || report.errors > 0) {
        eprintln!(
            "sealrelay-load: {} lost, {} errors",
            report.lost, report.errors
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
