//! The engine-neutral request model and its seeded generator.
//!
//! A [`Case`] is one payment request together with the delegation chain and usage it is decided
//! against, in plain integers (minor units, Unix seconds) so that every engine receives exactly
//! the same facts. The generator builds an allowed case first and then applies the refusals it
//! drew, so each case knows which rules it is meant to break ([`Case::refusals`]).

use std::fmt;

/// Seconds in the rolling window every leaf mandate limits (24 h).
pub const WINDOW_SECONDS: i64 = 86_400;

/// 2026-06-28T09:00:00Z, the earliest evaluation time of a generated case.
pub const BASE_NOW: i64 = 1_782_637_200;

/// The currencies requests and mandates use (all ISO 4217; JPY has no minor unit).
pub const CURRENCIES: [&str; 3] = ["EUR", "USD", "JPY"];

const MCCS: [&str; 12] = [
    "4111", "4511", "5411", "5691", "5732", "5812", "5942", "5948", "5999", "7011", "7832", "8999",
];
const MERCHANTS: u64 = 200;

/// The rule a refused request breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The request's actor is not the leaf mandate's actor (other id or other kind).
    WrongActor,
    /// A mandate of the chain is not active at `now`: expired, not yet valid, used or pending.
    NotActive,
    /// The request's currency is not the mandates' currency.
    CurrencyMismatch,
    /// The merchant is not in the leaf mandate's allowlist.
    MerchantNotAllowed,
    /// The merchant category is not in the leaf mandate's allowlist.
    MccNotAllowed,
    /// The amount is above the leaf mandate's per-transaction maximum.
    OverPerTransaction,
    /// The leaf mandate's 24 h window would go over its cap.
    OverWindow,
    /// An ancestor's spend plus the amount would go over the ancestor's cap.
    OverAncestorCap,
    /// A mandate of the chain is revoked.
    Revoked,
}

impl Refusal {
    /// Every kind of refusal.
    pub const ALL: [Refusal; 9] = [
        Refusal::WrongActor,
        Refusal::NotActive,
        Refusal::CurrencyMismatch,
        Refusal::MerchantNotAllowed,
        Refusal::MccNotAllowed,
        Refusal::OverPerTransaction,
        Refusal::OverWindow,
        Refusal::OverAncestorCap,
        Refusal::Revoked,
    ];
}

/// The kind of an actor (a Cedar entity type, a Rego string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A person.
    Human,
    /// An AI agent.
    Agent,
    /// A service.
    System,
}

impl Kind {
    /// The name used by all three engines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Human => "Human",
            Kind::Agent => "Agent",
            Kind::System => "System",
        }
    }
}

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorRef {
    /// Human, agent or system.
    pub kind: Kind,
    /// Identifier.
    pub id: String,
}

/// Lifecycle status of a generated mandate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// In force.
    Active,
    /// Revoked by the buyer.
    Revoked,
    /// Used up.
    Used,
    /// Waiting for the buyer's confirmation.
    PendingConfirmation,
}

impl Status {
    /// The wire name (agent-mandate's).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Revoked => "revoked",
            Status::Used => "used",
            Status::PendingConfirmation => "pending_confirmation",
        }
    }
}

/// A cap and what already counts against it, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Budget {
    /// The cap.
    pub cap: i64,
    /// Spent plus held.
    pub used: i64,
}

/// One mandate of a chain. Children attenuate their parent: subset of merchants and MCCs,
/// per-transaction maximum no higher, expiry no later, same buyer and currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Level {
    /// Mandate id, unique in a generated set.
    pub id: String,
    /// The actor the mandate authorizes.
    pub actor: ActorRef,
    /// Lifecycle status.
    pub status: Status,
    /// Valid from (inclusive), Unix seconds.
    pub valid_from: i64,
    /// Valid until (exclusive), Unix seconds.
    pub expires_at: i64,
    /// ISO 4217 code.
    pub currency: &'static str,
    /// Merchant allowlist.
    pub merchants: Vec<String>,
    /// MCC allowlist.
    pub mccs: Vec<String>,
    /// Per-transaction maximum, minor units.
    pub per_tx: i64,
    /// The leaf's 24 h window: cap and what it already holds.
    pub window: Option<Budget>,
    /// An ancestor's cap (its lifetime budget) and its spend, descendants included.
    pub lifetime: Option<Budget>,
}

/// One payment request with everything it is decided against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Case {
    /// Position in the generated sequence.
    pub index: u64,
    /// The rules this case was built to break; empty for an allowed case.
    pub refusals: Vec<Refusal>,
    /// Evaluation time, Unix seconds.
    pub now: i64,
    /// The buyer of every mandate of the chain.
    pub buyer: String,
    /// Who asks.
    pub actor: ActorRef,
    /// ISO 4217 code of the request.
    pub currency: &'static str,
    /// Merchant of the checkout.
    pub merchant: String,
    /// MCC of the merchant.
    pub mcc: String,
    /// Amount in minor units (the cart total).
    pub amount: i64,
    /// The delegation chain, root first; the request invokes the last one.
    pub chain: Vec<Level>,
}

impl Case {
    /// The mandate the request invokes.
    pub fn leaf(&self) -> &Level {
        // Invariant: the generator always builds at least one level.
        &self.chain[self.chain.len() - 1]
    }

    /// The ancestors of the leaf, nearest first.
    pub fn ancestors(&self) -> impl Iterator<Item = &Level> {
        self.chain[..self.chain.len() - 1].iter().rev()
    }

    /// The shared rules written by hand over the plain fields: the floor of what a decision
    /// on these facts can cost.
    pub fn rule_allows(&self) -> bool {
        let leaf = self.leaf();
        let in_force = |l: &Level| {
            l.status == Status::Active && l.valid_from <= self.now && self.now < l.expires_at
        };
        let fits = |b: Option<Budget>| b.is_some_and(|b| b.used + self.amount <= b.cap);
        leaf.actor == self.actor
            && in_force(leaf)
            && leaf.currency == self.currency
            && leaf.merchants.contains(&self.merchant)
            && leaf.mccs.contains(&self.mcc)
            && self.amount <= leaf.per_tx
            && fits(leaf.window)
            && self.ancestors().all(|a| in_force(a) && fits(a.lifetime))
    }

    /// Whether the case was built to be allowed.
    pub fn intended_allow(&self) -> bool {
        self.refusals.is_empty()
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "case #{} refusals={:?} now={} buyer={} actor={}::{} {} {} merchant={} mcc={}",
            self.index,
            self.refusals,
            self.now,
            self.buyer,
            self.actor.kind.as_str(),
            self.actor.id,
            self.amount,
            self.currency,
            self.merchant,
            self.mcc
        )?;
        for l in &self.chain {
            writeln!(
                f,
                "  {} actor={}::{} {} valid=[{}, {}) {} merchants={:?} mccs={:?} per_tx={} window={:?} lifetime={:?}",
                l.id,
                l.actor.kind.as_str(),
                l.actor.id,
                l.status.as_str(),
                l.valid_from,
                l.expires_at,
                l.currency,
                l.merchants,
                l.mccs,
                l.per_tx,
                l.window,
                l.lifetime
            )?;
        }
        Ok(())
    }
}

/// SplitMix64: small, seedable, good enough to spread test values.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi` (lo <= hi).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// `n` distinct items of `items`, in random order.
    fn sample<T: Clone>(&mut self, items: &[T], n: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        for i in 0..n.min(pool.len()) {
            let j = i + self.below((pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(n);
        pool
    }
}

/// A deterministic stream of cases: the same seed always yields the same sequence.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    index: u64,
}

impl Generator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng(seed),
            index: 0,
        }
    }

    /// The next `n` cases.
    pub fn take(&mut self, n: usize) -> Vec<Case> {
        (0..n).map(|_| self.next_case()).collect()
    }

    /// The next case: 40 % allowed, 45 % one refusal, 15 % two or three.
    pub fn next_case(&mut self) -> Case {
        let index = self.index;
        self.index += 1;
        let r = &mut self.rng;
        let n = match r.below(100) {
            0..40 => 0,
            40..85 => 1,
            _ => 2 + r.below(2) as usize,
        };
        let mut refusals: Vec<Refusal> = (0..n).map(|_| *r.pick(&Refusal::ALL)).collect();
        refusals.sort();
        refusals.dedup();
        build(r, index, refusals)
    }
}

/// `count` cases from `seed`.
pub fn generate(seed: u64, count: usize) -> Vec<Case> {
    Generator::new(seed).take(count)
}

fn merchant(n: u64) -> String {
    format!("merchant_{n:03}")
}

fn build(r: &mut Rng, index: u64, refusals: Vec<Refusal>) -> Case {
    let has = |k: Refusal| refusals.contains(&k);
    let depth = if has(Refusal::OverAncestorCap) {
        2 + r.below(3) as usize
    } else {
        1 + r.below(4) as usize
    };
    let now = BASE_NOW + r.range(0, 30 * 86_400);
    let currency = *r.pick(&CURRENCIES);
    let buyer = format!("buyer_{}", r.below(500));
    let all_merchants: Vec<String> = (0..MERCHANTS).map(merchant).collect();

    // The chain, root first, each level attenuating its parent.
    let mut chain: Vec<Level> = Vec::with_capacity(depth);
    for level in 0..depth {
        let is_leaf = level + 1 == depth;
        // The buyer holds the root; services hold the middle; an agent holds the leaf.
        let actor = match (is_leaf, level) {
            (true, _) => ActorRef {
                kind: Kind::Agent,
                id: format!("agent_{}", r.below(1000)),
            },
            (false, 0) => ActorRef {
                kind: Kind::Human,
                id: buyer.clone(),
            },
            (false, _) => ActorRef {
                kind: Kind::System,
                id: format!("service_{}", r.below(100)),
            },
        };
        let (merchants, mccs, per_tx, valid_from, expires_at, parent_cap) = match chain.last() {
            None => {
                let n = r.range(3, 8) as usize;
                let m = r.range(2, 5) as usize;
                (
                    r.sample(&all_merchants, n),
                    r.sample(&MCCS.map(String::from), m),
                    r.range(1_000, 100_000),
                    now - r.range(0, 30 * 86_400) * (r.chance(90) as i64),
                    now + r.range(1, 60 * 86_400),
                    None,
                )
            }
            Some(p) => {
                let n = r.range(1, p.merchants.len() as i64) as usize;
                let m = r.range(1, p.mccs.len() as i64) as usize;
                (
                    r.sample(&p.merchants, n),
                    r.sample(&p.mccs, m),
                    (p.per_tx * r.range(50, 100) / 100).max(1),
                    r.range(p.valid_from, now),
                    now + r.range(1, p.expires_at - now),
                    p.lifetime.map(|b| b.cap),
                )
            }
        };
        let budget_cap = {
            let own = per_tx * r.range(2, 20);
            parent_cap.map_or(own, |p| own.min(p).max(2 * per_tx))
        };
        chain.push(Level {
            id: format!("c{index}_m{level}"),
            actor,
            status: Status::Active,
            valid_from,
            expires_at,
            currency,
            merchants,
            mccs,
            per_tx,
            window: is_leaf.then_some(Budget {
                cap: per_tx * r.range(1, 5),
                used: 0,
            }),
            lifetime: (!is_leaf).then_some(Budget {
                cap: budget_cap,
                used: 0,
            }),
        });
    }

    let leaf = &chain[depth - 1];
    let mut actor = leaf.actor.clone();
    let mut merchant_id = r.pick(&leaf.merchants).clone();
    let mut mcc = r.pick(&leaf.mccs).clone();
    let mut req_currency = currency;
    let per_tx = leaf.per_tx;
    let amount = if has(Refusal::OverPerTransaction) {
        per_tx + r.range(1, per_tx / 2 + 1)
    } else if r.chance(10) {
        per_tx
    } else {
        r.range(1, per_tx)
    };

    // Budgets: fit unless the case is meant to overflow them; 10 % sit exactly at the cap.
    let fill = |r: &mut Rng, b: &mut Budget, over: bool| {
        if b.cap < amount {
            b.cap = amount + r.range(0, amount);
        }
        let room = b.cap - amount;
        b.used = if over {
            room + r.range(1, amount.max(2))
        } else if r.chance(10) {
            room
        } else {
            r.range(0, room)
        };
    };
    if let Some(w) = chain[depth - 1].window.as_mut() {
        fill(r, w, has(Refusal::OverWindow));
    }
    let over_ancestor = has(Refusal::OverAncestorCap).then(|| r.below(depth as u64 - 1) as usize);
    for (i, level) in chain[..depth - 1].iter_mut().enumerate() {
        if let Some(b) = level.lifetime.as_mut() {
            fill(r, b, over_ancestor == Some(i));
        }
    }

    for &k in &refusals {
        match k {
            Refusal::WrongActor => {
                if r.chance(50) {
                    actor.kind = if r.chance(50) {
                        Kind::Human
                    } else {
                        Kind::System
                    };
                } else {
                    actor.id = format!("agent_{}", 1000 + r.below(1000));
                }
            }
            Refusal::NotActive => make_inactive(r, &mut chain, now),
            Refusal::CurrencyMismatch => {
                while req_currency == currency {
                    req_currency = *r.pick(&CURRENCIES);
                }
            }
            Refusal::MerchantNotAllowed => {
                let leaf = &chain[depth - 1];
                // Half of the time the merchant is still allowed by an ancestor.
                let from_root = r
                    .chance(50)
                    .then(|| {
                        chain[0]
                            .merchants
                            .iter()
                            .find(|m| !leaf.merchants.contains(m))
                    })
                    .flatten();
                merchant_id = match from_root {
                    Some(m) => m.clone(),
                    None => loop {
                        let m = merchant(r.below(MERCHANTS + 50));
                        if !leaf.merchants.contains(&m) {
                            break m;
                        }
                    },
                };
            }
            Refusal::MccNotAllowed => {
                let leaf = &chain[depth - 1];
                mcc = loop {
                    let m = r.pick(&MCCS).to_string();
                    if !leaf.mccs.contains(&m) {
                        break m;
                    }
                };
            }
            Refusal::Revoked => {
                let level = r.below(depth as u64) as usize;
                chain[level].status = Status::Revoked;
            }
            Refusal::OverPerTransaction | Refusal::OverWindow | Refusal::OverAncestorCap => {}
        }
    }

    Case {
        index,
        refusals,
        now,
        buyer,
        actor,
        currency: req_currency,
        merchant: merchant_id,
        mcc,
        amount,
        chain,
    }
}

/// Makes one mandate of the chain inactive at `now`, keeping children's expiry no later than
/// their parent's.
fn make_inactive(r: &mut Rng, chain: &mut [Level], now: i64) {
    let level = r.below(chain.len() as u64) as usize;
    match r.below(4) {
        0 => {
            // Expired; `expires_at == now` is already expired (the bound is exclusive).
            let expires = now - r.range(0, 86_400) * (r.chance(80) as i64);
            for l in &mut chain[level..] {
                l.expires_at = l.expires_at.min(expires);
                if l.valid_from >= l.expires_at {
                    l.valid_from = l.expires_at - r.range(1, 86_400);
                }
            }
        }
        1 => {
            let l = &mut chain[level];
            l.valid_from = now + r.range(1, 86_400);
            l.expires_at = l.expires_at.max(l.valid_from + 1);
            // Keep every ancestor's expiry no earlier than this one's.
            let expires = l.expires_at;
            for a in &mut chain[..level] {
                a.expires_at = a.expires_at.max(expires);
            }
        }
        2 => chain[level].status = Status::Used,
        _ => chain[level].status = Status::PendingConfirmation,
    }
}
