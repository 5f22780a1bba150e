//! The risk-vector table of `docs/design.md` is the code's: every blocker code, its
//! class and its vector, in `BlockerCode::ALL` order, between the table markers. Run with
//! `UPDATE_DOCS=1` to rewrite the table from the code.

use agent_mandate::domain::{BlockerClass, BlockerCode, RiskVector};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/design.md");
const BEGIN: &str = "<!-- risk-vectors:begin -->";
const END: &str = "<!-- risk-vectors:end -->";

fn table() -> String {
    let mut t = String::from("| code | class | risk vector |\n|---|---|---|\n");
    for &code in BlockerCode::ALL {
        let class = match code.class() {
            BlockerClass::Hard => "hard",
            BlockerClass::Stale => "stale",
            BlockerClass::Confirmation => "confirmation",
        };
        let vector = code.risk_vector().map_or("none", RiskVector::as_str);
        t.push_str(&format!("| `{}` | {class} | {vector} |\n", code.as_str()));
    }
    t
}

#[test]
fn the_documented_table_is_the_codes() {
    let doc = std::fs::read_to_string(DOC).expect("docs/design.md");
    let (head, rest) = doc.split_once(BEGIN).expect("begin marker");
    let (_, tail) = rest.split_once(END).expect("end marker");
    let want = format!("{head}{BEGIN}\n{}{END}{tail}", table());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(DOC, &want).expect("write");
        return;
    }
    assert_eq!(
        doc, want,
        "the risk-vector table is stale: run with UPDATE_DOCS=1"
    );
}

/// Every vector has codes; the decision names the vectors of its blockers once each.
#[test]
fn every_vector_is_used_and_decisions_carry_them() {
    for v in RiskVector::ALL {
        assert!(
            BlockerCode::ALL.iter().any(|c| c.risk_vector() == Some(*v)),
            "{v} has no code"
        );
    }
    let mut doc = agent_mandate::domain::examples::travel_backpack_document();
    doc.request.amount = agent_mandate::domain::examples::travel_backpack_snapshot().total();
    doc.request.merchant_id = "merchant_elsewhere".parse().expect("id");
    let d = agent_mandate::domain::evaluate(&doc.input());
    assert!(d.has(BlockerCode::MerchantMismatch), "{d:?}");
    assert_eq!(d.risk_vectors(), vec![RiskVector::WrongPlace]);
}
