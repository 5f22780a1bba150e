//! Principals for the tests: what a host's authentication layer would hand the engine.

use agent_mandate::domain::examples;
use agent_mandate::domain::{Actor, ActorKind, Principal};

/// The story's agent, authenticated.
pub fn agent_p() -> Principal {
    Principal::Agent(examples::agent().id)
}

/// The story's buyer, authenticated.
pub fn buyer_p() -> Principal {
    Principal::Buyer(examples::buyer())
}

/// An operator the host granted the role.
pub fn operator_p() -> Principal {
    Principal::Operator("ops_1".parse().expect("id"))
}

/// A system process of the host.
pub fn system_p() -> Principal {
    Principal::System("scheduler".parse().expect("id"))
}

/// The principal a test fixture's actor stands for: an agent or system as itself, a human as
/// the story's buyer. Tests only: a host never turns what a caller says into a principal.
pub fn who(actor: &Actor) -> Principal {
    match actor.kind {
        ActorKind::Agent => Principal::Agent(actor.id.clone()),
        ActorKind::System => Principal::System(actor.id.clone()),
        ActorKind::Human => buyer_p(),
    }
}

/// Whoever the command's request names as its actor, authenticated.
pub fn payer(cmd: &agent_mandate::engine::ExecutePayment) -> Principal {
    who(&cmd.request.actor)
}
