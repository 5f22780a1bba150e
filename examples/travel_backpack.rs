//! The Travel Backpack story of "Delegated Payment Needs More Than a Token", told with
//! agent-mandate's authority decision.
//!
//! A buyer tells an agent: "Buy the Travel Backpack if the final total is under EUR 150." The
//! agent holds a payment credential. Watch the decision change as the facts change.
//!
//! Run: `cargo run --example travel_backpack`

use agent_mandate::domain::{evaluate, examples, Currency, EvaluationDocument, Outcome};

fn tell(step: &str, doc: &EvaluationDocument) -> Outcome {
    let decision = evaluate(&doc.input());
    println!("== {step}");
    println!(
        "   request: {} {} at {} for snapshot {}",
        doc.request.action, doc.request.amount, doc.request.merchant_id, doc.request.snapshot_id
    );
    for line in decision.to_string().lines() {
        println!("   {line}");
    }
    println!();
    decision.outcome
}

fn main() {
    println!("Buyer buyer_456 to agent agent_123: \"Buy the Travel Backpack if the final total is under EUR 150.\"");
    println!("Mandate mandate_001: merchant_001, MCC 5948, BAG-TRAVEL-42, at most 150.00 EUR including shipping and tax.\n");

    // 1. A payment artifact is present, but checkout is blocked upstream.
    let mut doc = examples::document_for(examples::over_limit_snapshot());
    doc.checkout = examples::invalid_checkout();
    let first = tell(
        "1. Inventory is stale and the return policy is missing",
        &doc,
    );

    // 2. Checkout is fixed, but shipping and tax bring the total to 153.00.
    let doc = examples::document_for(examples::over_limit_snapshot());
    let second = tell(
        "2. Checkout valid, total 129.00 + 9.00 shipping + 15.00 tax = 153.00 EUR",
        &doc,
    );

    // 3. The same cart priced in USD.
    let usd = agent_mandate::domain::CartSnapshot::new(examples::backpack_content(
        "0.00",
        "15.00",
        Currency::USD,
    ))
    .expect("the USD cart is valid");
    let doc = examples::document_for(usd);
    let third = tell("3. The checkout is in USD", &doc);

    // 4. Free shipping: 129.00 + 15.00 tax = 144.00 EUR.
    let doc = examples::travel_backpack_document();
    let fourth = tell("4. Free shipping: 144.00 EUR, inside the mandate", &doc);

    assert_eq!(
        [first, second, third, fourth],
        [
            Outcome::Blocked,
            Outcome::Blocked,
            Outcome::Blocked,
            Outcome::Allowed
        ],
        "the story's decisions changed"
    );
    println!("The agent may now request authorization of 144.00 EUR; the token was evidence, never the authority.");
}
