//! `agent-mandate`: the command-line face of the crate, for operators and for test suites in
//! other languages.
//!
//! ```text
//! agent-mandate snapshot-id [FILE|-]
//! agent-mandate evaluate [FILE|-] [--format json|text]
//! agent-mandate audit verify      STORE [--format text|json]
//! agent-mandate usage MANDATE     STORE [--format text|json]
//! agent-mandate attempts --open   STORE [--limit N] [--format text|json]
//! agent-mandate reconcile         STORE --stripe-url URL [--limit N] [--format text|json]
//! agent-mandate purge             STORE [--format text|json]
//! agent-mandate migrate           STORE [--format text|json]
//! STORE: --sqlite FILE | --postgres URL [--schema NAME] (or AGENT_MANDATE_POSTGRES_URL)
//! ```
//!
//! Exit codes: 0 when a result was produced (an id, a decision whatever its outcome, a
//! report), 1 when the input was rejected (the typed error, naming the field, goes to stderr)
//! or a check found a problem (a broken audit chain, a state without its event), 2 for a
//! usage error, an unreadable file, a database that cannot be reached or is behind, an unknown
//! mandate. No output and no error ever shows the PostgreSQL password or the PSP's API key.

use std::io::Read;
use std::process::ExitCode;

use agent_mandate::domain::{evaluate, CartSnapshot, EvaluationDocument};
use agent_mandate::json::from_json;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod ops;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store;

const USAGE: &str = "\
usage:
  agent-mandate snapshot-id [FILE|-]                      print the id of a cart snapshot
  agent-mandate evaluate [FILE|-] [--format json|text]    print the authority decision
  agent-mandate audit verify STORE                        verify the hash chain and that every stored state has its event
  agent-mandate usage MANDATE STORE                       the usage of every level of a mandate's chain
  agent-mandate attempts --open STORE [--limit N]         the attempts whose outcome is unknown
  agent-mandate reconcile STORE --stripe-url URL [--limit N]
                                                          resolve open attempts from the PSP (key in STRIPE_API_KEY)
  agent-mandate purge STORE                               delete idempotency records past retention, expired challenges
  agent-mandate migrate STORE                             bring the schema to this version's
  agent-mandate verify-trail STORE                        the same as audit verify
  agent-mandate --help | --version

STORE is --sqlite FILE, or --postgres URL [--schema NAME]; without either, the URL in
AGENT_MANDATE_POSTGRES_URL (keeps the password off the command line). The operator commands
never migrate (only `migrate` does) and print text, or JSON with --format json.
Input is JSON read from FILE, or from standard input when FILE is '-' or absent.
Exit codes: 0 result printed, 1 input rejected (error names the field) or a check found a
problem, 2 usage, IO or connection error. --sqlite needs the sqlite feature, --postgres the
postgres feature, reconcile the http feature.";

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Machine-readable, stable field names.
    Json,
    /// For people.
    Text,
}

/// A command's result, in the format asked for.
#[derive(Debug)]
pub struct Report {
    /// What goes to standard output.
    pub out: String,
}

impl Report {
    /// `text` or `body` (pretty JSON), whichever `format` asks for.
    #[allow(dead_code, reason = "used only with a store feature")]
    pub fn new(format: Format, text: String, body: serde_json::Value) -> Report {
        let out = match format {
            Format::Text => text,
            Format::Json => serde_json::to_string_pretty(&body).unwrap_or(text),
        };
        Report { out }
    }
}

/// How a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments, or a feature this build lacks (exit 2).
    Usage(String),
    /// The input was rejected (exit 1); the message names the field.
    Rejected(String),
    /// A check found a problem (exit 1): the report goes to standard output, the summary to
    /// standard error.
    #[allow(dead_code, reason = "used only with a store feature")]
    Finding { report: Report, summary: String },
    /// A file, the database or the PSP failed, or what was asked for does not exist (exit 2).
    Io(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Rejected(_) | Failure::Finding { .. } => 1,
            Failure::Usage(_) | Failure::Io(_) => 2,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secrets = secrets_of(&args);
    let scrub = |text: &str| {
        let mut text = text.to_owned();
        for s in &secrets {
            text = text.replace(s.as_str(), "<redacted>");
        }
        text
    };
    match run(&args) {
        Ok(out) => {
            out_line(&scrub(&out));
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let code = failure.code();
            match failure {
                Failure::Usage(m) => err_line(&format!("error: {}\n{USAGE}", scrub(&m))),
                Failure::Rejected(m) | Failure::Io(m) => {
                    err_line(&format!("error: {}", scrub(&m)));
                }
                Failure::Finding { report, summary } => {
                    out_line(&scrub(&report.out));
                    err_line(&format!("error: {}", scrub(&summary)));
                }
            }
            ExitCode::from(code)
        }
    }
}

/// Writes a line to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn out_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Writes a line to standard error (ignoring a closed stream, as [`out_line`]).
fn err_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The secrets the arguments and the environment hold (the PostgreSQL password, the PSP's
/// API key), scrubbed from every output as a last guard (no message is meant to hold them).
fn secrets_of(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    if let Ok(Parsed {
        backend: Some(b), ..
    }) = parse(args)
    {
        out.extend(b.secrets());
    }
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    let _ = args;
    if let Ok(key) = std::env::var("STRIPE_API_KEY") {
        out.push(key);
    }
    // A secret of two characters or fewer would scrub ordinary text; none is that short.
    out.retain(|s| s.len() > 2);
    out
}

/// The command line, parsed.
struct Parsed {
    command: String,
    positional: Vec<String>,
    format: Option<Format>,
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    backend: Option<store::Backend>,
    open: bool,
    limit: Option<usize>,
    stripe_url: Option<String>,
}

fn parse(args: &[String]) -> Result<Parsed, Failure> {
    let Some(command) = args.first() else {
        return Err(usage("missing command"));
    };
    let mut positional = Vec::new();
    let mut format = None;
    let mut sqlite: Option<String> = None;
    let mut postgres: Option<String> = None;
    let mut schema: Option<String> = None;
    let mut open = false;
    let mut limit = None;
    let mut stripe_url = None;
    let mut rest = args[1..].iter();
    let value = |rest: &mut std::slice::Iter<'_, String>, option: &str, what: &str| {
        rest.next()
            .cloned()
            .ok_or_else(|| Failure::Usage(format!("{option} takes {what}")))
    };
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--sqlite" => sqlite = Some(value(&mut rest, "--sqlite", "a database file")?),
            "--postgres" => postgres = Some(value(&mut rest, "--postgres", "a URL")?),
            "--schema" => schema = Some(value(&mut rest, "--schema", "a schema name")?),
            "--stripe-url" => stripe_url = Some(value(&mut rest, "--stripe-url", "a URL")?),
            "--open" => open = true,
            "--limit" => {
                let n = value(&mut rest, "--limit", "a number")?;
                limit =
                    Some(n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        usage(format!("--limit takes a positive number, not {n:?}"))
                    })?);
            }
            "--format" => {
                format = Some(
                    match value(&mut rest, "--format", "json or text")?.as_str() {
                        "json" => Format::Json,
                        "text" => Format::Text,
                        other => {
                            return Err(usage(format!(
                                "--format takes json or text, not {other:?}"
                            )))
                        }
                    },
                )
            }
            a if a.starts_with("--") => return Err(usage(format!("unknown option {a}"))),
            a => positional.push(a.to_owned()),
        }
    }
    if sqlite.is_some() && postgres.is_some() {
        return Err(usage("give --sqlite or --postgres, not both"));
    }
    if schema.is_some() && postgres.is_none() && sqlite.is_some() {
        return Err(usage("--schema is for --postgres"));
    }
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    let backend = match (sqlite, postgres) {
        (Some(path), _) => Some(store::Backend::Sqlite(path)),
        (None, Some(url)) => Some(store::Backend::Postgres { url, schema }),
        (None, None) => match std::env::var(store::POSTGRES_URL_ENV) {
            Ok(url) if !url.is_empty() => Some(store::Backend::Postgres { url, schema }),
            _ => None,
        },
    };
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    if sqlite.is_some() || postgres.is_some() || schema.is_some() {
        let (option, feature) = if sqlite.is_some() {
            ("--sqlite", "sqlite")
        } else {
            ("--postgres", "postgres")
        };
        return Err(usage(format!(
            "{option} needs the {feature} feature (cargo install agent-mandate --features {feature})"
        )));
    }
    Ok(Parsed {
        command: command.clone(),
        positional,
        format,
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        backend,
        open,
        limit,
        stripe_url,
    })
}

fn run(args: &[String]) -> Result<String, Failure> {
    let p = parse(args)?;
    let at_most = |n: usize, p: &Parsed| -> Result<(), Failure> {
        if p.positional.len() > n {
            return Err(usage(format!("unexpected argument {}", p.positional[n])));
        }
        Ok(())
    };
    match p.command.as_str() {
        "--help" | "-h" | "help" => Ok(USAGE.to_owned()),
        "--version" | "-V" => Ok(format!("agent-mandate {}", env!("CARGO_PKG_VERSION"))),
        "snapshot-id" => {
            at_most(1, &p)?;
            let text = read_input(p.positional.first().map(String::as_str))?;
            let snapshot: CartSnapshot =
                from_json(&text).map_err(|e| Failure::Rejected(e.to_string()))?;
            Ok(snapshot.id().to_string())
        }
        "evaluate" => {
            at_most(1, &p)?;
            let text = read_input(p.positional.first().map(String::as_str))?;
            let doc: EvaluationDocument =
                from_json(&text).map_err(|e| Failure::Rejected(e.to_string()))?;
            let decision = evaluate(&doc.input());
            match p.format.unwrap_or(Format::Json) {
                Format::Text => Ok(decision.to_string()),
                Format::Json => serde_json::to_string_pretty(&decision)
                    .map_err(|e| Failure::Io(format!("cannot write the decision: {e}"))),
            }
        }
        "audit" | "verify-trail" | "usage" | "attempts" | "reconcile" | "purge" | "migrate" => {
            operator(&p)
        }
        other => Err(usage(format!("unknown command {other}"))),
    }
}

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
fn operator(p: &Parsed) -> Result<String, Failure> {
    let _ = (p.open, p.limit, &p.stripe_url);
    Err(Failure::Usage(format!(
        "{} needs the sqlite or the postgres feature (cargo install agent-mandate --features sqlite)",
        p.command
    )))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn operator(p: &Parsed) -> Result<String, Failure> {
    let format = p.format.unwrap_or(Format::Text);
    let command = match (p.command.as_str(), p.positional.first().map(String::as_str)) {
        ("audit", Some("verify")) => "audit verify",
        ("audit", Some(other)) => return Err(usage(format!("unknown audit command {other}"))),
        ("audit", None) => return Err(usage("audit takes a command: audit verify")),
        ("verify-trail", _) => "audit verify",
        (c, _) => c,
    };
    let takes = match command {
        "audit verify" if p.command == "audit" => 1,
        "usage" => 1,
        _ => 0,
    };
    if p.positional.len() > takes {
        return Err(usage(format!(
            "unexpected argument {}",
            p.positional[takes]
        )));
    }
    if command == "usage" && p.positional.is_empty() {
        return Err(usage("usage takes a mandate id: usage MANDATE"));
    }
    if command == "attempts" && !p.open {
        return Err(usage(
            "attempts takes --open (the attempts whose outcome is unknown)",
        ));
    }
    if p.stripe_url.is_some() && command != "reconcile" {
        return Err(usage(format!(
            "--stripe-url is for reconcile, not {command}"
        )));
    }
    let Some(backend) = &p.backend else {
        return Err(usage(format!(
            "{command} takes --sqlite FILE or --postgres URL (or {} in the environment)",
            store::POSTGRES_URL_ENV
        )));
    };
    let limit = p.limit.unwrap_or(100);
    #[cfg(feature = "http")]
    let provider = if command == "reconcile" {
        Some(stripe(p.stripe_url.as_deref())?)
    } else {
        None
    };
    #[cfg(not(feature = "http"))]
    if command == "reconcile" {
        return Err(store::needs("reconcile", "http"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Io(format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(async {
        match command {
            "audit verify" => ops::audit_verify(backend, format).await,
            "usage" => ops::usage(backend, &p.positional[0], format).await,
            "attempts" => ops::open_attempts(backend, limit, format).await,
            #[cfg(feature = "http")]
            "reconcile" => match provider {
                Some(psp) => ops::reconcile(backend, psp, limit, format).await,
                None => Err(Failure::Usage("reconcile needs a PSP".into())),
            },
            "purge" => ops::purge(backend, format).await,
            "migrate" => ops::migrate(backend, format).await,
            other => Err(Failure::Usage(format!("unknown command {other}"))),
        }
    })?;
    Ok(report.out)
}

/// The Stripe-compatible PSP of `reconcile`: `--stripe-url`, the key in `STRIPE_API_KEY`.
#[cfg(all(feature = "http", any(feature = "sqlite", feature = "postgres")))]
fn stripe(
    url: Option<&str>,
) -> Result<std::sync::Arc<dyn agent_mandate::ports::PaymentProvider>, Failure> {
    use agent_mandate::adapters::http::{StripeConfig, StripeProvider};
    use agent_mandate::ports::{Secret, SystemClock};
    let Some(url) = url else {
        return Err(Failure::Usage(
            "reconcile takes --stripe-url URL (https://api.stripe.com or a compatible server)"
                .into(),
        ));
    };
    let key = std::env::var("STRIPE_API_KEY").map_err(|_| {
        Failure::Usage(
            "reconcile reads the PSP's API key from STRIPE_API_KEY, which is not set".into(),
        )
    })?;
    let config = StripeConfig::new(url, Secret::new(key))
        .map_err(|e| Failure::Usage(format!("--stripe-url: {e}")))?;
    let provider = StripeProvider::new(
        config,
        std::sync::Arc::new(store::Offline),
        std::sync::Arc::new(SystemClock),
    )
    .map_err(|e| Failure::Io(format!("cannot build the PSP client: {e}")))?;
    Ok(std::sync::Arc::new(provider))
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn read_input(file: Option<&str>) -> Result<String, Failure> {
    let mut bytes = Vec::new();
    let name = match file {
        None | Some("-") => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Io(format!("cannot read standard input: {e}")))?;
            "standard input".to_owned()
        }
        Some(path) => {
            bytes =
                std::fs::read(path).map_err(|e| Failure::Io(format!("cannot read {path}: {e}")))?;
            path.to_owned()
        }
    };
    // I17: text that is not UTF-8 is an input rejected (exit 1), not an I/O failure.
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        Failure::Rejected(format!(
            "{name}: not valid UTF-8 (invalid byte at offset {at})"
        ))
    })
}
