"""agent-bouncer (PyPI) on the peers benchmark's requests, for the rules it can express.

Reads the JSON lines written by `cargo run -p peers --release --bin peers-export -- PATH`
(the benchmark's 1,024 requests from `peers::BENCH_SEED`, each with agent-mandate's decision),
builds one bouncer `Policy`, `PaymentIntent` and spend history per request, checks that
bouncer's `evaluate` allows exactly the requests agent-mandate allows, then times `evaluate`
alone and prints a markdown table.

bouncer is a per-agent policy: no delegation chain, no mandate lifecycle, no ancestor caps.
Translation of a request with a one-mandate chain (the leaf is the root):

- actor: the agent id is "Kind:id"; the policy names only the leaf mandate's actor, so a wrong
  id or kind is AGENT_NOT_IN_POLICY;
- mandate not in force (expired, not yet valid, used, pending) or revoked: a translation, not a
  bouncer capability: the request's policy names no agent but a placeholder, so the agent is
  absent from it (bouncer has no lifecycle or validity of its own);
- currency: the policy currency is the mandate's currency;
- merchant and MCC allowlists: `merchants.allow` and `categories.allow` (the MCC as category);
- per-transaction maximum: `per_transaction_cap`;
- 24 h window: one `RollingWindow(window="24h")` of the window cap, and a spend history of one
  `SpendRecord` holding the mandate's window usage, an hour before `now`;
- no approval rule, so REQUIRE_APPROVAL cannot occur (and fails the run if it does).

Amounts are exact `Decimal` major units (minor units scaled by the currency exponent), so the
comparisons are the same integer comparisons agent-mandate makes.

Requests whose chain has ancestors are excluded: bouncer cannot express an ancestor's cap or
lifecycle, so it would be deciding a different question.

Usage: python compare.py REQUESTS.jsonl [--rounds N] [--estimates PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path

from bouncer.engine import evaluate
from bouncer.models import Outcome, PaymentIntent, SpendRecord
from bouncer.policy import CategoryRules, MerchantRules, Policy, RollingWindow, RuleSet

DEFAULT_ESTIMATES = "target/criterion/policy_engines/agent_mandate/new/estimates.json"

#: The only agent of the policy of a request whose mandate is not in force: a key no request
#: uses, so the request's agent is absent from its policy.
NO_MANDATE_IN_FORCE = "(no mandate in force)"


def major(minor: int, exponent: int) -> Decimal:
    """Exact major units: 12345 minor units at exponent 2 is Decimal('123.45')."""
    return Decimal(minor).scaleb(-exponent)


def window_name(seconds: int) -> str:
    if seconds % 3600:
        raise SystemExit(f"window of {seconds} s is not whole hours")
    return f"{seconds // 3600}h"


def translate(rec: dict) -> tuple[PaymentIntent, Policy, list[SpendRecord], datetime]:
    """bouncer's inputs for one request (built once, outside the timed loop)."""
    leaf = rec["leaf"]
    now = datetime.fromtimestamp(rec["now"], tz=timezone.utc)
    exp = leaf["exponent"]
    if leaf["active"] and leaf["status"] == "active":
        agents = {
            leaf["agent"]: RuleSet(
                per_transaction_cap=major(leaf["per_tx"], exp),
                rolling_windows=[
                    RollingWindow(
                        amount=major(leaf["window_cap"], exp),
                        window=window_name(leaf["window_seconds"]),
                    )
                ],
                merchants=MerchantRules(allow=list(leaf["merchants"])),
                categories=CategoryRules(allow=list(leaf["mccs"])),
            )
        }
    else:
        agents = {
            NO_MANDATE_IN_FORCE: RuleSet(
                per_transaction_cap=Decimal(0), merchants=MerchantRules(allow=[])
            )
        }
    policy = Policy(currency=leaf["currency"], agents=agents)
    history = [
        SpendRecord(
            agent_id=leaf["agent"],
            amount=major(leaf["window_used"], exp),
            currency=leaf["currency"],
            timestamp=now - timedelta(hours=1),
        )
    ]
    intent = PaymentIntent(
        intent_id=f"request-{rec['index']}",
        agent_id=rec["agent"],
        merchant=rec["merchant"],
        amount=major(rec["amount"], rec["exponent"]),
        currency=rec["currency"],
        category=rec["mcc"],
    )
    if intent.merchant != rec["merchant"] or intent.category != rec["mcc"]:
        raise SystemExit(f"bouncer normalised request #{rec['index']}'s merchant or MCC")
    return intent, policy, history, now


def agent_mandate_median_ns(path: Path) -> float | None:
    try:
        return float(json.loads(path.read_text())["median"]["point_estimate"])
    except (OSError, KeyError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests", type=Path)
    parser.add_argument("--rounds", type=int, default=500, help="timed passes over the set")
    parser.add_argument("--warmup", type=int, default=5, help="untimed passes first")
    parser.add_argument("--estimates", type=Path, default=Path(DEFAULT_ESTIMATES))
    args = parser.parse_args()

    records = [json.loads(line) for line in args.requests.read_text().splitlines() if line]
    compared = [r for r in records if r["ancestors"] == 0]
    excluded = [r for r in records if r["ancestors"] > 0]
    if not compared:
        raise SystemExit("no request with a one-mandate chain to compare")
    for r in compared:
        if "OverAncestorCap" in r["refusals"] or r["ancestor_blocks"]:
            raise SystemExit(f"request #{r['index']} has no ancestor but depends on one")

    # Everything bouncer needs, built once.
    inputs = [translate(r) for r in compared]

    # Agreement on every compared request, before any timing.
    reasons: Counter[str] = Counter()
    for rec, (intent, policy, history, now) in zip(compared, inputs):
        decision = evaluate(intent, policy, history, now=now)
        reasons[decision.reason_code.value] += 1
        if decision.outcome is Outcome.REQUIRE_APPROVAL or decision.allowed != rec["allowed"]:
            print(
                f"DISAGREEMENT on request #{rec['index']}: agent-mandate "
                f"{'allowed' if rec['allowed'] else 'refused'}, bouncer "
                f"{decision.describe()}\nrequest: {json.dumps(rec)}\n"
                f"policy: {policy.model_dump_json()}\nhistory: {history}",
                file=sys.stderr,
            )
            return 1
    allowed = sum(r["allowed"] for r in compared)

    # Timing: only the `evaluate` call, one sample per decision, median over all samples.
    for _ in range(args.warmup):
        for intent, policy, history, now in inputs:
            evaluate(intent, policy, history, now=now)
    clock = time.perf_counter_ns
    samples: list[int] = []
    record = samples.append
    for _ in range(args.rounds):
        for intent, policy, history, now in inputs:
            t0 = clock()
            evaluate(intent, policy, history, now=now)
            t1 = clock()
            record(t1 - t0)
    overhead = statistics.median(_clock_overhead(clock))
    median_ns = statistics.median(samples)
    q = statistics.quantiles(samples, n=10)

    am_ns = agent_mandate_median_ns(args.estimates)
    ancestors = Counter(r["ancestors"] for r in excluded)
    blocked_by_ancestor = sum(r["ancestor_blocks"] for r in excluded)

    print(
        f"agent-bouncer {version('agent-bouncer')} (pydantic {version('pydantic')}), "
        f"Python {platform.python_version()}; {args.rounds} rounds x {len(inputs)} requests "
        f"= {len(samples)} timed decisions; perf_counter_ns pair overhead {overhead:.0f} ns "
        "(not subtracted)\n"
    )
    print("| | value |")
    print("|---|---:|")
    print(f"| requests compared (one-mandate chains) | {len(compared)} "
          f"({allowed} allowed, {len(compared) - allowed} refused) |")
    print(f"| requests excluded (chain has ancestors) | {len(excluded)} "
          f"({', '.join(f'{ancestors[k]} with {k}' for k in sorted(ancestors))} ancestors; "
          f"{blocked_by_ancestor} refused by an ancestor) |")
    print(f"| allow/deny agreement with agent-mandate | {len(compared)}/{len(compared)} |")
    print(f"| bouncer `evaluate`, median per decision | {median_ns / 1000:.1f} us "
          f"(p10 {q[0] / 1000:.1f}, p90 {q[-1] / 1000:.1f}) |")
    if am_ns is None:
        print(f"| agent-mandate median per decision | not found ({args.estimates}): run "
              "`cargo bench -p peers --bench engines` for the ratio |")
    else:
        print(f"| agent-mandate median per decision (criterion, all 1,024) | "
              f"{am_ns / 1000:.2f} us |")
        print(f"| bouncer / agent-mandate | **{median_ns / am_ns:.0f}x** |")
    alone = Counter(r["refusals"][0] for r in compared if len(r["refusals"]) == 1)
    print("\ncompared requests built to break one rule: "
          + ", ".join(f"{k} {v}" for k, v in sorted(alone.items()))
          + f"; {sum(len(r['refusals']) > 1 for r in compared)} break several")
    print("bouncer reason codes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    return 0


def _clock_overhead(clock) -> list[int]:
    out = []
    for _ in range(10_000):
        t0 = clock()
        t1 = clock()
        out.append(t1 - t0)
    return out


if __name__ == "__main__":
    sys.exit(main())
