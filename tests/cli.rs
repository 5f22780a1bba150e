//! The `agent-mandate` binary: ids, decisions, typed errors and exit codes (I11, I12).
#![cfg(feature = "cli")]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use agent_mandate::domain::{examples, AuthorityDecision, Outcome};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-mandate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    if let Some(text) = stdin {
        // The binary may exit before reading (usage errors): a broken pipe is expected then.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes());
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("binary finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

#[test]
fn snapshot_id_of_the_shipped_file_is_the_fixture_id() {
    let out = run(
        &["snapshot-id", "examples/data/travel_backpack_snapshot.json"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        examples::travel_backpack_snapshot().id().to_string()
    );
}

#[test]
fn snapshot_id_reads_stdin_and_ignores_key_order() {
    let json = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/data/travel_backpack_snapshot.json"),
    )
    .expect("fixture file");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    // serde_json's map without preserve_order sorts keys: a different order than the file.
    let reordered = serde_json::to_string(&value).expect("json");
    let a = run(&["snapshot-id", "-"], Some(&json));
    let b = run(&["snapshot-id"], Some(&reordered));
    assert!(a.status.success() && b.status.success());
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn invalid_snapshot_names_the_field_and_exits_1() {
    let mut value: serde_json::Value =
        serde_json::to_value(examples::travel_backpack_snapshot()).expect("json");
    value["totals"]["total"]["amount"] = serde_json::Value::String("150.00".into());
    let out = run(&["snapshot-id", "-"], Some(&value.to_string()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("totals.total"), "{err}");
    assert!(stdout(&out).is_empty());
}

/// I11: inputs over a limit exit with the input-rejected code and name the field.
#[test]
fn oversized_inputs_name_the_field_and_exit_1() {
    let doc = serde_json::to_value(examples::travel_backpack_document()).expect("json");
    let blocker = serde_json::json!({"code": "INVENTORY_STALE", "message": "stale"});
    let mut upstream = doc;
    upstream["checkout"] = serde_json::json!({"invalid": {"checkout_id": "checkout_789",
        "blockers": vec![blocker; 5000]}});
    let mut snapshot = serde_json::to_value(examples::travel_backpack_snapshot()).expect("json");
    snapshot["items"] = serde_json::Value::Array(vec![snapshot["items"][0].clone(); 501]);
    for (args, input, field) in [
        (
            &["evaluate", "-"][..],
            upstream.to_string(),
            "checkout.invalid.blockers",
        ),
        (&["snapshot-id", "-"][..], snapshot.to_string(), "items"),
    ] {
        let out = run(args, Some(&input));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with(&format!("error: {field}: ")), "{err}");
        assert!(err.contains("at most"), "{err}");
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn malformed_json_exits_1_without_panicking() {
    for input in ["", "{", "[1,2", "null", "\"text\"", "{\"merchant\": 5}"] {
        let out = run(&["snapshot-id"], Some(input));
        assert_eq!(
            out.status.code(),
            Some(1),
            "input {input:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"));
    }
}

#[test]
fn evaluate_prints_the_decision_as_json() {
    let out = run(&["evaluate", "examples/data/evaluate_allowed.json"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let decision: AuthorityDecision = serde_json::from_str(&stdout(&out)).expect("decision json");
    assert_eq!(decision.outcome, Outcome::Allowed);
    let out = run(&["evaluate", "examples/data/evaluate_blocked.json"], None);
    let decision: AuthorityDecision = serde_json::from_str(&stdout(&out)).expect("decision json");
    assert_eq!(decision.outcome, Outcome::Blocked);
    assert_eq!(decision.blockers[0].code.as_str(), "CHECKOUT_NOT_VALID");
    assert_eq!(decision.blockers[0].causes.len(), 2);
}

#[test]
fn evaluate_text_format_is_readable() {
    let out = run(
        &[
            "evaluate",
            "--format",
            "text",
            "examples/data/evaluate_blocked.json",
        ],
        None,
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("blocked"), "{text}");
    assert!(text.contains("caused by INVENTORY_STALE"));
    assert!(text.contains("AMOUNT_EXCEEDS_MANDATE [mandate_001]"));
}

#[test]
fn the_shipped_documents_match_the_fixtures() {
    let read = |p: &str| {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
            .expect("fixture file")
    };
    let doc: agent_mandate::domain::EvaluationDocument =
        agent_mandate::json::from_json(&read("examples/data/evaluate_allowed.json"))
            .expect("valid document");
    assert_eq!(doc, examples::travel_backpack_document());
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["evaluate", "--format", "yaml"],
        vec!["evaluate", "--bogus"],
        vec!["snapshot-id", "a.json", "b.json"],
        vec!["snapshot-id", "/nonexistent/file.json"],
    ] {
        let out = run(&args, Some("{}"));
        assert_eq!(out.status.code(), Some(2), "args {args:?}");
        assert!(stderr(&out).starts_with("error:"), "args {args:?}");
    }
    let help = run(&["--help"], None);
    assert!(help.status.success());
    assert!(stdout(&help).contains("snapshot-id"));
}

fn run_bytes(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-mandate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    child.wait_with_output().expect("binary finishes")
}

/// I17: input that is not UTF-8 is an input rejected (exit 1, naming the input), not a usage
/// or I/O error (exit 2).
#[test]
fn invalid_utf8_exits_1_naming_the_input() {
    let mut bytes = br#"{"merchant": ""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#""}"#);
    for args in [&["snapshot-id", "-"][..], &["evaluate", "-"][..]] {
        let out = run_bytes(args, &bytes);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: standard input: "), "{err}");
        assert!(err.contains("UTF-8"), "{err}");
        assert!(stdout(&out).is_empty());
    }
    let path = std::env::temp_dir().join(format!("agent-mandate-bad-utf8-{}", std::process::id()));
    std::fs::write(&path, &bytes).expect("temp file");
    let p = path.to_str().expect("utf-8 path");
    let out = run(&["snapshot-id", p], None);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(p), "{}", stderr(&out));
}

/// I17: a snapshot with a struct in the positional (array) form gets no id; the error names the
/// field.
#[test]
fn positional_snapshot_exits_1_naming_the_field() {
    let mut value: serde_json::Value =
        serde_json::to_value(examples::travel_backpack_snapshot()).expect("json");
    value["items"][0]["unit_price"] = serde_json::json!(["129.00", "EUR"]);
    let out = run(&["snapshot-id", "-"], Some(&value.to_string()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: items[0].unit_price: "), "{err}");
    assert!(stdout(&out).is_empty());
}
