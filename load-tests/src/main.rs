//! `sealrelay-load`: run one scenario and print (or write) its report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sealrelay_load::{run, Report, Scenario};

/// Scripted load for sealrelay (sealed envelopes through the SDK) or, with --plain, for any
/// MQTT broker. Loopback only: point it at a broker on this machine.
#[derive(Parser)]
#[command(name = "sealrelay-load", version, args_override_self = true)]
struct Cli {
    /// Read the scenario from a TOML file whose keys are these flags' names
    /// (`consoles = 100`, `plain = true`, ...); flags given on the command line win.
    #[arg(long)]
    scenario_file: Option<PathBuf>,
    #[command(flatten)]
    scenario: Scenario,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit non-zero if any QoS 1 message was lost or any error occurred.
    #[arg(long)]
    assert_no_loss: bool,
    /// Do not run: print a markdown table of the JSON reports in this directory (files named
    /// LABEL.BROKER[.N].json; of repeated runs, the median is shown), in file-name order.
    #[arg(long)]
    summarize: Option<PathBuf>,
    /// With --summarize: also write a throughput/latency chart (SVG) to this file.
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// Puts the flags a `--scenario-file` spells out before the command line's own, so clap
/// checks them all and later (command-line) flags override the file's.
fn with_scenario_file(args: Vec<String>) -> Result<Vec<String>, String> {
    let Some(at) = args.iter().position(|a| a == "--scenario-file") else {
        return Ok(args);
    };
    let path = args.get(at + 1).ok_or("--scenario-file needs a path")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{path}: {}", e.message()))?;
    let mut expanded = vec![args[0].clone()];
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => expanded.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => expanded.extend([flag, s]),
            toml::Value::Integer(_) | toml::Value::Float(_) => {
                expanded.extend([flag, value.to_string()])
            }
            _ => {
                return Err(format!(
                    "{path}: `{key}` must be a string, number or boolean"
                ))
            }
        }
    }
    expanded.extend(args.into_iter().skip(1));
    Ok(expanded)
}

fn summarize(dir: &std::path::Path, chart: Option<&std::path::Path>) -> Result<String, String> {
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
    let runs = sealrelay_load::report::medians(runs);
    if let Some(path) = chart {
        std::fs::write(path, sealrelay_load::report::chart(&runs))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(format!(
        "{}\n## Targets\n\n{}",
        sealrelay_load::report::markdown(&runs),
        sealrelay_load::report::targets(&runs)
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match with_scenario_file(std::env::args().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sealrelay-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    if let Some(dir) = &cli.summarize {
        return match summarize(dir, cli.chart.as_deref()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_file_keys_become_flags_that_the_command_line_overrides() {
        let dir = std::env::temp_dir().join(format!("sealrelay-load-test-{}", std::process::id()));
        std::fs::write(
            &dir,
            "consoles = 7\nplain = true\nkind = \"storm\"\nqos = 0\n",
        )
        .unwrap();
        let args = [
            "sealrelay-load",
            "--scenario-file",
            dir.to_str().unwrap(),
            "--consoles",
            "9",
        ]
        .map(String::from)
        .to_vec();
        let cli = Cli::parse_from(with_scenario_file(args).unwrap());
        std::fs::remove_file(&dir).unwrap();
        let s = cli.scenario;
        assert_eq!(
            (s.consoles, s.plain, s.kind, s.qos),
            (9, true, sealrelay_load::Kind::Storm, 0)
        );
    }
}
