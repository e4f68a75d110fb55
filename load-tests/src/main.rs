//! `sealrelay-load`: run one scenario and print (or write) its report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sealrelay_load::{run, Report, Scenario};

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
    /// Do not run: print a markdown table of the JSON reports (files named LABEL.BROKER.json)
    /// in this directory, in file-name order.
    #[arg(long)]
    summarize: Option<PathBuf>,
}

fn summarize(dir: &std::path::Path) -> Result<String, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut runs = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let report: Report =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let label = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('.').next())
            .unwrap_or("")
            .to_owned();
        runs.push((label, report));
    }
    Ok(format!(
        "{}\n## Targets\n\n{}",
        sealrelay_load::report::markdown(&runs),
        sealrelay_load::report::targets(&runs)
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.summarize {
        return match summarize(dir) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sealrelay-load: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
