//! `agent-mandate`: the command-line face of the crate, for operators and for test suites in
//! other languages.
//!
//! ```text
//! agent-mandate snapshot-id [FILE|-]
//! agent-mandate evaluate [FILE|-] [--format json|text]
//! agent-mandate verify-trail --sqlite FILE     (feature `sqlite`)
//! agent-mandate purge --sqlite FILE            (feature `sqlite`)
//! ```
//!
//! Exit codes: 0 when an id or a decision was produced (whatever the decision's outcome),
//! 1 when the input was rejected (the typed error, naming the field, goes to stderr) or the
//! trail check found a state without its event, 2 for a usage error or an unreadable file.

use std::io::Read;
use std::process::ExitCode;

use agent_mandate::domain::{evaluate, CartSnapshot, EvaluationDocument};
use agent_mandate::json::from_json;

#[cfg(feature = "sqlite")]
mod store;

const USAGE: &str = "\
usage:
  agent-mandate snapshot-id [FILE|-]                      print the id of a cart snapshot
  agent-mandate evaluate [FILE|-] [--format json|text]    print the authority decision
  agent-mandate verify-trail --sqlite FILE                check that every stored state has its audit event
  agent-mandate purge --sqlite FILE                       delete idempotency records past their retention
  agent-mandate --help | --version

Input is JSON read from FILE, or from standard input when FILE is '-' or absent.
Exit codes: 0 result printed, 1 input rejected (error names the field) or events missing,
2 usage or IO error. verify-trail and purge need the `sqlite` feature.";

enum Format {
    Json,
    Text,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &[String]) -> Result<String, (u8, String)> {
    let usage = |msg: &str| (2, format!("error: {msg}\n{USAGE}"));
    let Some(command) = args.first() else {
        return Err(usage("missing command"));
    };
    let mut file: Option<&str> = None;
    let mut format = Format::Json;
    let mut sqlite: Option<&str> = None;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--sqlite" => match rest.next() {
                Some(path) => sqlite = Some(path.as_str()),
                None => return Err(usage("--sqlite takes a database file")),
            },
            "--format" => match rest.next().map(String::as_str) {
                Some("json") => format = Format::Json,
                Some("text") => format = Format::Text,
                _ => return Err(usage("--format takes json or text")),
            },
            "-" if file.is_none() => file = Some("-"),
            a if a.starts_with("--") => return Err(usage(&format!("unknown option {a}"))),
            a if file.is_none() => file = Some(a),
            a => return Err(usage(&format!("unexpected argument {a}"))),
        }
    }
    match command.as_str() {
        "--help" | "-h" | "help" => Ok(USAGE.to_owned()),
        "--version" | "-V" => Ok(format!("agent-mandate {}", env!("CARGO_PKG_VERSION"))),
        "snapshot-id" => {
            let text = read_input(file)?;
            let snapshot: CartSnapshot =
                from_json(&text).map_err(|e| (1, format!("error: {e}")))?;
            Ok(snapshot.id().to_string())
        }
        "evaluate" => {
            let text = read_input(file)?;
            let doc: EvaluationDocument =
                from_json(&text).map_err(|e| (1, format!("error: {e}")))?;
            let decision = evaluate(&doc.input());
            match format {
                Format::Text => Ok(decision.to_string()),
                Format::Json => serde_json::to_string_pretty(&decision)
                    .map_err(|e| (2, format!("error: cannot write the decision: {e}"))),
            }
        }
        "verify-trail" | "purge" => match sqlite {
            #[cfg(feature = "sqlite")]
            Some(path) => store::run(command, path),
            #[cfg(not(feature = "sqlite"))]
            Some(_) => Err(usage(&format!(
                "{command} needs the sqlite feature (cargo install with --features sqlite)"
            ))),
            None => Err(usage(&format!("{command} takes --sqlite FILE"))),
        },
        other => Err(usage(&format!("unknown command {other}"))),
    }
}

fn read_input(file: Option<&str>) -> Result<String, (u8, String)> {
    let mut bytes = Vec::new();
    let name = match file {
        None | Some("-") => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| (2, format!("error: cannot read standard input: {e}")))?;
            "standard input".to_owned()
        }
        Some(path) => {
            bytes =
                std::fs::read(path).map_err(|e| (2, format!("error: cannot read {path}: {e}")))?;
            path.to_owned()
        }
    };
    // I17: text that is not UTF-8 is an input rejected (exit 1), not an I/O failure.
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        (
            1,
            format!("error: {name}: not valid UTF-8 (invalid byte at offset {at})"),
        )
    })
}
