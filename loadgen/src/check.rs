//! `loadgen check` (what `perf/check` calls): a perf run's ratios against
//! `perf/baseline.json`.
//!
//! The baseline lists ratios (never absolute times): for each entry, the
//! run's ratio must not be worse than the baseline's by more than the
//! entry's tolerance (a fraction: 0.3 means 30 % worse at most). A ratio the
//! run does not have fails the check too: a silently skipped measurement
//! must not pass.
//!
//! An entry may instead bound a quantity that is not a time (memory per
//! connection): `{"scenario", "metric", "target", "max"}`; the median must
//! not exceed `max`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value as Json};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The run to check (report.json written by `loadgen perf`).
    #[arg(default_value = "perf/report.json")]
    report: PathBuf,
    /// The baseline.
    #[arg(long, default_value = "perf/baseline.json")]
    baseline: PathBuf,
    /// Write a new baseline from this run's ratios instead of checking
    /// (keeps the entries and tolerances of the existing baseline).
    #[arg(long)]
    write_baseline: bool,
}

fn load(p: &PathBuf) -> Result<Json, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

fn ratio(report: &Json, scenario: &str, key: &str) -> Option<f64> {
    report["scenarios"][scenario]["ratios"][key]["ratio"].as_f64()
}

pub fn run(a: CheckArgs) -> ExitCode {
    match check(&a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("perf check: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(a: &CheckArgs) -> Result<bool, String> {
    let report = load(&a.report)?;
    let mut baseline = load(&a.baseline)?;
    let default_tol = baseline["tolerance"].as_f64().unwrap_or(0.3);
    let entries = baseline["checks"]
        .as_array()
        .cloned()
        .ok_or("the baseline has no \"checks\" list")?;
    if a.write_baseline {
        let mut out = Vec::new();
        for e in &entries {
            let (sc, key) = (
                e["scenario"].as_str().unwrap_or(""),
                e["ratio"].as_str().unwrap_or(""),
            );
            let mut e = e.clone();
            if e.get("ratio").is_none() {
                // bounds (memory) are set by hand
                out.push(e);
                continue;
            }
            match ratio(&report, sc, key) {
                Some(v) => e["baseline"] = json!((v * 1000.0).round() / 1000.0),
                None => eprintln!("perf check: {sc} {key}: not in this run; entry kept as it was"),
            }
            out.push(e);
        }
        baseline["checks"] = Json::Array(out);
        baseline["from"] = json!(format!(
            "{} run of {} rounds, {} s each",
            report["mode"].as_str().unwrap_or("?"),
            report["rounds"],
            report["duration_s"]
        ));
        std::fs::write(
            &a.baseline,
            serde_json::to_string_pretty(&baseline).unwrap_or_default() + "\n",
        )
        .map_err(|e| e.to_string())?;
        println!("perf check: wrote {}", a.baseline.display());
        return Ok(true);
    }
    let mut ok = true;
    println!(
        "{:<14} {:<34} {:>9} {:>9} {:>6}  result",
        "scenario", "ratio", "baseline", "this run", "tol"
    );
    for e in &entries {
        let sc = e["scenario"].as_str().unwrap_or("");
        if let (Some(metric), Some(target), Some(max)) = (
            e["metric"].as_str(),
            e["target"].as_str(),
            e["max"].as_f64(),
        ) {
            // a bound on a non-time quantity (memory): the median must stay under it
            let key = format!("{metric}.{target} <= max");
            match report["scenarios"][sc]["targets"][target][metric]["median"].as_f64() {
                Some(v) if v.is_finite() => {
                    let pass = v <= max;
                    ok &= pass;
                    println!(
                        "{sc:<14} {key:<34} {max:>9.3} {v:>9.3} {:>6}  {}",
                        "-",
                        if pass { "ok" } else { "FAIL (higher)" }
                    );
                }
                _ => {
                    ok = false;
                    println!(
                        "{sc:<14} {key:<34} {max:>9.3} {:>9} {:>6}  FAIL (not measured)",
                        "-", "-"
                    );
                }
            }
            continue;
        }
        let key = e["ratio"].as_str().unwrap_or("");
        let base = e["baseline"].as_f64().unwrap_or(f64::NAN);
        let tol = e["tolerance"].as_f64().unwrap_or(default_tol);
        let higher = report["scenarios"][sc]["ratios"][key]["higher_is_better"]
            .as_bool()
            .or_else(|| e["higher_is_better"].as_bool())
            .unwrap_or(true);
        let verdict = match ratio(&report, sc, key) {
            None => {
                ok = false;
                println!(
                    "{sc:<14} {key:<34} {base:>9.3} {:>9} {tol:>6.2}  FAIL (not measured)",
                    "-"
                );
                continue;
            }
            Some(v) => {
                let pass = if higher {
                    v >= base * (1.0 - tol)
                } else {
                    v <= base * (1.0 + tol)
                };
                (v, pass)
            }
        };
        let (v, pass) = verdict;
        if !pass {
            ok = false;
        }
        println!(
            "{sc:<14} {key:<34} {base:>9.3} {v:>9.3} {tol:>6.2}  {}",
            if pass {
                "ok"
            } else if higher {
                "FAIL (lower)"
            } else {
                "FAIL (higher)"
            }
        );
    }
    println!("perf check: {}", if ok { "passed" } else { "FAILED" });
    Ok(ok)
}
