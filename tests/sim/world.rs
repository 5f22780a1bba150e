//! The simulated world: the backends (memory, or a SQLite file reopened on restart), the PSP
//! model, a three-level delegation chain with tight caps, one agent per level, and the one
//! helper that builds engines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::memory::{ManualClock, MemoryAuditSink, MemoryStore, MemoryVault};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase, Synchronous};
use agent_mandate::domain::{
    examples, Actor, ActorId, ActorKind, CartSnapshot, CredentialRef, Currency, Lifecycle, Mandate,
    MandateId, MandateSpec, MandateStatus, Money, Principal, WindowLimit,
};
use agent_mandate::engine::{CreateMandate, DeriveMandate, Engine, EngineConfig};
use agent_mandate::ports::{AuditSink, Ports, Store};

use super::exec::block_on;
use super::ports::{YieldingAudit, YieldingStore, YieldingVault};
use super::psp::PspModel;
use super::Ctx;
use crate::common::engine::{card, key};
use crate::common::principals::buyer_p;

/// The hard deadline the PSP model declares for every call (`PaymentProvider::deadline`): its
/// effect lands within it (shorter than the lease, as I13 asks of every adapter), while a
/// slow answer may still come after the lease (a peer that lies about its deadline).
pub const PSP_DEADLINE: Option<Duration> = Some(Duration::from_secs(20));

/// How far past the lease a slow answer or a late effect may come when no deadline is
/// declared.
pub const PSP_SLOWEST: Duration = Duration::from_secs(60);

/// The one place engines are built: adapt here when `Engine::new` or `EngineConfig` change.
/// Auto-suspension is off (refusals at the caps are the normal case here).
pub fn engine_for(ports: Ports) -> Engine {
    Engine::new(ports, config()).expect("the lease outlasts the PSP's deadline")
}

pub fn config() -> EngineConfig {
    let config = EngineConfig::default()
        .with_auto_suspend_after(None)
        .expect("valid configuration");
    if CONTROLS.with(std::cell::Cell::get) {
        // Tighter than recommended, so the controls act within a seed's few hundred steps.
        use agent_mandate::engine::{Breaker, Controls, Rate};
        let hour = Duration::from_secs(3600);
        // The simulated agents declare no purchase intent: the required intent is off here
        // (tests/controls_hardening.rs covers it).
        let controls = Controls::recommended()
            .with_intent_required(false)
            .with_velocity(Some(Rate::new(2, hour).expect("rate")))
            .with_auth_failures(Some(
                Breaker::new(Rate::new(1, Duration::from_secs(600)).expect("rate"), hour)
                    .expect("breaker"),
            ));
        config.with_controls(controls)
    } else {
        config
    }
}

thread_local! {
    /// Every safety control on (`Controls::recommended()`, velocity and breaker tightened) in the engines this thread builds.
    pub static CONTROLS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite(PathBuf),
}

/// An agent paying under the mandate at `level` of the chain (0: root).
#[derive(Debug, Clone)]
pub struct Agent {
    pub actor: Actor,
    pub level: usize,
    pub card: CredentialRef,
}

pub struct World {
    pub ctx: Arc<Ctx>,
    pub psp: Arc<PspModel>,
    pub vault: Arc<MemoryVault>,
    /// The unwrapped store and audit sink (for the invariant checks).
    pub store: Arc<dyn Store>,
    pub audit: Arc<dyn AuditSink>,
    pub engine: Engine,
    pub backend: Backend,
    /// Root to leaf.
    pub chain: Vec<Mandate>,
    pub agents: Vec<Agent>,
    pub snapshots: Vec<CartSnapshot>,
    pub restarts: u32,
}

fn eur(a: &str) -> Money {
    Money::parse(a, Currency::EUR).expect("amount")
}

fn open(backend: &Backend) -> (Arc<dyn Store>, Arc<dyn AuditSink>) {
    match backend {
        Backend::Memory => (
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryAuditSink::new()),
        ),
        Backend::Sqlite(path) => {
            let db =
                SqliteDatabase::open(SqliteConfig::file(path).synchronous(Synchronous::Normal))
                    .expect("open the SQLite file");
            (Arc::new(db.store()), Arc::new(db.audit_sink()))
        }
    }
}

/// A mandate of the chain: `level` 0 is the root. Caps shrink down the chain; windows are
/// one hour, so clock jumps open them again while the lifetime caps stay.
fn spec(level: usize, actor: &Actor) -> MandateSpec {
    let mut s = examples::travel_backpack_mandate().spec().clone();
    let (id, lifetime, window) = [
        ("mandate_root", "900.00", "600.00"),
        ("mandate_child", "600.00", "450.00"),
        ("mandate_leaf", "300.00", "300.00"),
    ][level];
    s.id = id.parse::<MandateId>().expect("id");
    s.actor = actor.clone();
    s.parent_id = (level > 0).then(|| {
        ["mandate_root", "mandate_child"][level - 1]
            .parse()
            .expect("id")
    });
    s.scope.max_uses = None;
    s.scope.amount.max_payment_attempts = None;
    s.scope.budgets.lifetime = Some(eur(lifetime));
    s.scope.budgets.windows = vec![WindowLimit {
        window_seconds: 3600,
        max_amount: Some(eur(window)),
        max_count: None,
    }];
    let start = examples::now() - chrono::Duration::hours(1);
    s.scope.validity.not_before = start;
    s.scope.validity.expires_at = start + chrono::Duration::days(60);
    s.lifecycle = Lifecycle::new(MandateStatus::Active, start);
    s
}

fn snapshot(shipping: &str, tax: &str) -> CartSnapshot {
    let mut c = examples::backpack_content(shipping, tax, Currency::EUR);
    c.created_at = examples::now() - chrono::Duration::minutes(5);
    c.expires_at = examples::now() + chrono::Duration::days(60);
    CartSnapshot::new(c).expect("snapshot")
}

impl World {
    pub fn new(ctx: Arc<Ctx>, backend: Backend) -> World {
        let psp = Arc::new(PspModel::new(
            ctx.clone(),
            config().lease(),
            PSP_DEADLINE,
            PSP_SLOWEST,
        ));
        let vault = Arc::new(MemoryVault::new());
        let (store, audit) = open(&backend);
        let engine = Self::engine(&ctx, &psp, &vault, &store, &audit);
        let actors = [
            examples::agent(),
            agent("agent_sub_7"),
            agent("agent_sub_8"),
        ];
        let mut chain = Vec::new();
        let mut agents = Vec::new();
        for (level, actor) in actors.iter().enumerate() {
            let spec = spec(level, actor);
            let k = key(&format!("setup-mandate-{level}"));
            let m = if level == 0 {
                block_on(engine.create_mandate(&buyer_p(), &CreateMandate::new(k, spec)))
            } else {
                // Each agent delegates to the next one down.
                let parent = Principal::Agent(actors[level - 1].id.clone());
                block_on(engine.derive_mandate(&parent, &DeriveMandate::new(k, spec)))
            }
            .expect("setup mandate")
            .value;
            chain.push(m);
            let card = block_on(engine.store_credential(
                &buyer_p(),
                &key("card"),
                card(&actor.id, "pm_card_visa"),
            ))
            .expect("card")
            .value
            .reference;
            agents.push(Agent {
                actor: actor.clone(),
                level,
                card,
            });
        }
        World {
            ctx,
            psp,
            vault,
            store,
            audit,
            engine,
            backend,
            chain,
            agents,
            snapshots: vec![
                snapshot("0.00", "15.00"),
                snapshot("0.00", "0.00"),
                snapshot("9.00", "0.00"),
            ],
            restarts: 0,
        }
    }

    fn engine(
        ctx: &Arc<Ctx>,
        psp: &Arc<PspModel>,
        vault: &Arc<MemoryVault>,
        store: &Arc<dyn Store>,
        audit: &Arc<dyn AuditSink>,
    ) -> Engine {
        let clock: Arc<ManualClock> = ctx.clock.clone();
        engine_for(Ports {
            store: Arc::new(YieldingStore(store.clone())),
            provider: psp.clone(),
            vault: Arc::new(YieldingVault(vault.clone())),
            audit: Arc::new(YieldingAudit {
                inner: audit.clone(),
                ctx: ctx.clone(),
            }),
            clock,
        })
    }

    /// A new process over the same durable state (the memory adapters persist in their
    /// `Arc`s; a SQLite file is opened again).
    pub fn restart(&mut self) {
        if let Backend::Sqlite(_) = self.backend {
            let (store, audit) = open(&self.backend);
            self.store = store;
            self.audit = audit;
        }
        self.engine = Self::engine(&self.ctx, &self.psp, &self.vault, &self.store, &self.audit);
        self.restarts += 1;
    }
}

fn agent(id: &str) -> Actor {
    Actor {
        id: id.parse::<ActorId>().expect("id"),
        kind: ActorKind::Agent,
    }
}
