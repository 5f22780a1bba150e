//! A fake PSP with a durable record of what it did: every effect is written to a JSON file
//! (temp file, fsync, rename) before the call returns, so a process killed right after a PSP
//! call leaves the PSP's view for the next process to read. Idempotent by provider key, like a
//! real PSP: the same key never has a second effect.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use agent_mandate::domain::{Money, ProviderRef, ProviderReport, ProviderStatus};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub attempt_id: String,
    pub authorize_key: String,
    pub report: ProviderReport,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next: u64,
    /// Reference -> payment.
    payments: BTreeMap<String, Payment>,
    /// Authorize key -> reference.
    by_key: BTreeMap<String, String>,
    /// Follow-up key -> reference (the answer is the payment as it is now).
    follow_ups: BTreeMap<String, String>,
    /// Every effect, in order: ("authorize" | "capture" | "void" | "refund", attempt id).
    effects: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct JournalPsp {
    path: PathBuf,
    state: Mutex<State>,
}

impl JournalPsp {
    /// Opens the journal at `path` (empty if missing).
    pub fn open(path: &Path) -> JournalPsp {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("a readable PSP journal"),
            Err(_) => State::default(),
        };
        JournalPsp {
            path: path.to_path_buf(),
            state: Mutex::new(state),
        }
    }

    fn persist(&self, state: &State) {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).expect("journal temp file");
        f.write_all(&serde_json::to_vec(state).expect("journal json"))
            .expect("journal write");
        f.sync_all().expect("journal fsync");
        std::fs::rename(&tmp, &self.path).expect("journal rename");
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
    }

    /// Every payment the PSP knows.
    pub fn payments(&self) -> Vec<Payment> {
        self.state
            .lock()
            .unwrap()
            .payments
            .values()
            .cloned()
            .collect()
    }

    /// How many times `kind` took effect for `attempt_id`.
    pub fn effects(&self, kind: &str, attempt_id: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.effects
            .iter()
            .filter(|(k, a)| k == kind && a == attempt_id)
            .count()
    }

    fn follow_up(
        &self,
        key: &str,
        reference: &ProviderRef,
        kind: &str,
        apply: impl FnOnce(&mut ProviderReport) -> Result<(), ProviderError>,
    ) -> Result<ProviderReport, ProviderError> {
        let mut s = self.state.lock().unwrap();
        if let Some(r) = s.follow_ups.get(key).cloned() {
            return Ok(s.payments[&r].report.clone());
        }
        let Some(p) = s.payments.get_mut(reference.as_str()) else {
            return Err(ProviderError::Invalid {
                message: format!("no payment {reference}"),
            });
        };
        apply(&mut p.report)?;
        let report = p.report.clone();
        let attempt = p.attempt_id.clone();
        s.follow_ups
            .insert(key.to_string(), reference.as_str().to_string());
        s.effects.push((kind.to_string(), attempt));
        self.persist(&s);
        Ok(report)
    }
}

fn invalid(message: &str) -> ProviderError {
    ProviderError::Invalid {
        message: message.into(),
    }
}

#[async_trait]
impl PaymentProvider for JournalPsp {
    fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }

    async fn authorize(&self, req: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let mut s = self.state.lock().unwrap();
        if let Some(r) = s.by_key.get(req.key.as_str()) {
            return Ok(s.payments[r].report.clone());
        }
        s.next += 1;
        let reference = format!("pi_journal_{}", s.next);
        let zero = Money::zero(req.amount.currency());
        let report = ProviderReport {
            reference: Some(reference.parse().expect("reference")),
            status: if req.capture {
                ProviderStatus::Captured
            } else {
                ProviderStatus::Authorized
            },
            authorized: req.amount,
            captured: if req.capture { req.amount } else { zero },
            refunded: zero,
            decline_code: None,
        };
        s.payments.insert(
            reference.clone(),
            Payment {
                attempt_id: req.attempt_id.to_string(),
                authorize_key: req.key.to_string(),
                report: report.clone(),
            },
        );
        s.by_key.insert(req.key.to_string(), reference);
        s.effects
            .push(("authorize".into(), req.attempt_id.to_string()));
        self.persist(&s);
        Ok(report)
    }

    async fn capture(&self, req: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.follow_up(req.key.as_str(), &req.reference, "capture", |r| {
            if r.status != ProviderStatus::Authorized || req.amount.exceeds(&r.authorized) {
                return Err(invalid("cannot capture"));
            }
            r.status = ProviderStatus::Captured;
            r.captured = req.amount;
            Ok(())
        })
    }

    async fn void(&self, req: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.follow_up(req.key.as_str(), &req.reference, "void", |r| {
            if r.status != ProviderStatus::Authorized {
                return Err(invalid("cannot void"));
            }
            r.status = ProviderStatus::Cancelled;
            Ok(())
        })
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        self.follow_up(req.key.as_str(), &req.reference, "refund", |r| {
            let total = r
                .refunded
                .checked_add(&req.amount)
                .map_err(|_| invalid("currency"))?;
            if r.status != ProviderStatus::Captured || total.exceeds(&r.captured) {
                return Err(invalid("cannot refund"));
            }
            r.refunded = total;
            Ok(())
        })
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        let s = self.state.lock().unwrap();
        let reference = match lookup {
            Lookup::Reference(r) => Some(r.as_str().to_string()),
            Lookup::Key(k) | Lookup::KeySubmitted { key: k, .. } => {
                s.by_key.get(k.as_str()).cloned()
            }
        };
        Ok(reference
            .and_then(|r| s.payments.get(&r))
            .map(|p| p.report.clone()))
    }
}
