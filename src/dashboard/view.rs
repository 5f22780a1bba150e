//! The page frame, the inline CSS and script, and the limit bars (inline SVG).

use std::sync::OnceLock;

use base64::Engine as _;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest as _, Sha256};

use super::DashboardConfig;
use crate::domain::{BuyerId, Mandate, Usage};

pub mod palette {
    //! The colours of the pages, named here and in the docs; the tests compute each bar colour's
    //! contrast ratio against the page background and the bar's track (at least 3:1, the WCAG
    //! minimum for graphics).
    //!
    //! | name | colour | use |
    //! |---|---|---|
    //! | [`BACKGROUND`] | `#ffffff` white | page and card background |
    //! | [`TEXT`] | `#111827` near black | text |
    //! | [`TRACK`] | `#e5e7eb` light grey | the empty part of a bar |
    //! | [`SPENT`] | `#1d4ed8` blue | spent (and a window's held + spent) |
    //! | [`HELD`] | `#b45309` amber | held: authorized, not yet captured or released |
    //! | [`MARK`] | `#111827` near black | the 80% mark |
    //! | [`WARNING`] | `#b91c1c` red | at or past 80%, refusals, the kill switch |
    //! | [`GOOD`] | `#15803d` green | active, allowed |

    /// Page and card background.
    pub const BACKGROUND: &str = "#ffffff";
    /// Text.
    pub const TEXT: &str = "#111827";
    /// The empty part of a bar.
    pub const TRACK: &str = "#e5e7eb";
    /// Spent.
    pub const SPENT: &str = "#1d4ed8";
    /// Held.
    pub const HELD: &str = "#b45309";
    /// The 80% mark.
    pub const MARK: &str = "#111827";
    /// Warnings.
    pub const WARNING: &str = "#b91c1c";
    /// Active, allowed.
    pub const GOOD: &str = "#15803d";
    /// The colours drawn as bar segments or marks (each must stand out from the background
    /// and the track).
    pub const BAR_COLOURS: [(&str, &str); 4] = [
        ("spent", SPENT),
        ("held", HELD),
        ("mark", MARK),
        ("warning", WARNING),
    ];
}

/// The share of a limit at which a bar is marked (the engine's default threshold event).
pub(crate) const MARK_PERCENT: i128 = 80;

fn css() -> String {
    use palette::*;
    format!(
        "*{{box-sizing:border-box}}\
body{{margin:0;font:16px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:{TEXT};background:#f3f4f6}}\
header{{background:{TEXT};color:#fff;padding:.6rem 1rem}}\
header a{{color:#fff}}header .meta{{color:#e5e7eb}}\
nav ul{{list-style:none;margin:.4rem 0 0;padding:0;display:flex;flex-wrap:wrap;gap:.3rem 1rem}}\
nav a[aria-current=page]{{font-weight:700;text-decoration-thickness:3px}}\
main{{max-width:60rem;margin:0 auto;padding:1rem}}\
h1{{font-size:1.4rem;margin:.2rem 0 1rem}}h2{{font-size:1.15rem;margin:1.2rem 0 .5rem}}h3{{font-size:1rem;margin:.2rem 0}}\
.card{{background:{BACKGROUND};border:1px solid #d1d5db;border-radius:8px;padding:.8rem 1rem;margin:0 0 .8rem}}\
.children{{margin-left:1rem;padding-left:.8rem;border-left:3px solid #d1d5db}}\
.meta{{color:#374151;font-size:.9rem;margin:.1rem 0}}\
.status{{display:inline-block;font-size:.8rem;font-weight:600;padding:0 .4rem;border-radius:4px;border:1px solid currentColor}}\
.good{{color:{GOOD}}}.warn{{color:{WARNING}}}.muted{{color:#374151}}\
.bar{{display:block;width:100%;height:1.1rem;margin:.5rem 0 .1rem}}\
.barlabel{{font-size:.85rem;margin:0}}\
.legend span{{display:inline-block;width:.8rem;height:.8rem;margin:0 .25rem 0 .6rem;vertical-align:middle}}\
.ls{{background:{SPENT}}}.lh{{background:{HELD}}}.lm{{background:{MARK};width:.2rem!important}}\
table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #e5e7eb;vertical-align:top}}\
.num{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}\
code{{font-size:.8rem;word-break:break-all}}\
form.inline{{display:inline}}\
button{{font:inherit;padding:.45rem .9rem;border-radius:6px;border:1px solid {TEXT};background:#fff;color:{TEXT};cursor:pointer;margin:.3rem .3rem 0 0}}\
button.primary{{background:{SPENT};border-color:{SPENT};color:#fff}}\
button.danger{{background:{WARNING};border-color:{WARNING};color:#fff}}\
label{{display:block;margin:.4rem 0 .1rem;font-weight:600}}\
input[type=text],select{{font:inherit;padding:.35rem;width:100%;max-width:24rem}}\
input[type=checkbox]{{width:1.1rem;height:1.1rem;vertical-align:middle}}\
label.check{{font-weight:400}}\
.notice{{border-left:4px solid {WARNING};padding:.4rem .8rem;background:#fef2f2}}\
@media (max-width:600px){{main{{padding:.6rem}}.children{{margin-left:.3rem;padding-left:.5rem}}td,th{{padding:.2rem}}}}"
    )
}

/// The poll: swap `<main>`'s content for the server's fragment while no control in it has
/// focus; nothing happens without script.
const SCRIPT: &str = "(function(){var m=document.querySelector('main[data-poll]');if(!m||!window.fetch)return;var last=null;setInterval(function(){var a=document.activeElement;if(document.hidden||(a&&a!==document.body&&m.contains(a)))return;fetch(location.href,{headers:{'X-Dashboard-Fragment':'1'},credentials:'same-origin'}).then(function(r){return r.ok?r.text():null}).then(function(t){if(t!==null&&t!==last){last=t;m.innerHTML=t}}).catch(function(){})},1000*(+m.dataset.poll))})();";

struct Assets {
    css: String,
    csp: String,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let css = css();
        let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
        let csp = format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; img-src data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hash(&css),
            hash(SCRIPT)
        );
        Assets { css, csp }
    })
}

/// The `Content-Security-Policy` of every page: nothing from anywhere but the inline CSS and
/// script (by their hashes), fetches and forms to the same origin.
pub(crate) fn csp() -> &'static str {
    &assets().csp
}

/// The pages of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Activity,
    Waiting,
    Stop,
}

/// A whole page: head, header with navigation, and `main`.
pub(crate) fn document(
    cfg: &DashboardConfig,
    buyer: &BuyerId,
    active: Nav,
    title: &str,
    main: Markup,
) -> Markup {
    let base = cfg.base_path();
    let link = |nav: Nav, path: &str, text: &str| {
        let href = if path == "/" && !base.is_empty() {
            base.to_owned()
        } else {
            format!("{base}{path}")
        };
        html! { li { a href=(href) aria-current=[(nav == active).then_some("page")] { (text) } } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                link rel="icon" href="data:,";
                title { (title) " · agent-mandate" }
                style { (PreEscaped(&assets().css)) }
            }
            body {
                header {
                    strong { "Your agents' spending" }
                    span.meta { " · signed in as " (buyer) }
                    nav aria-label="Dashboard" {
                        ul {
                            (link(Nav::Overview, "/", "Overview"))
                            (link(Nav::Activity, "/activity", "Activity"))
                            (link(Nav::Waiting, "/waiting", "Waiting for you"))
                            (link(Nav::Stop, "/stop", "Stop"))
                        }
                    }
                }
                main data-poll=(cfg.poll_seconds()) { (main) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// The name of a window of `seconds`.
pub(crate) fn window_name(seconds: u64) -> String {
    match seconds {
        86_400 => "daily".to_owned(),
        604_800 => "weekly".to_owned(),
        s if s % 86_400 == 0 => format!("{}-day", s / 86_400),
        3_600 => "hourly".to_owned(),
        s if s % 3_600 == 0 => format!("{}-hour", s / 3_600),
        s if s % 60 == 0 => format!("{}-minute", s / 60),
        s => format!("{s}-second"),
    }
}

/// One limit as a bar: spent and held against the maximum, in minor units or counts.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    pub name: String,
    pub spent: i128,
    pub held: i128,
    pub max: i128,
    /// The numbers, as text.
    pub text: String,
}

impl Meter {
    /// The share of the maximum used (held + spent), in whole percent, rounded down.
    pub(crate) fn percent(&self) -> i128 {
        if self.max <= 0 {
            return 100;
        }
        (self.spent + self.held).max(0) * 100 / self.max
    }
}

/// The bars of a mandate's limits: lifetime, each window (amount and count), uses.
pub(crate) fn meters(mandate: &Mandate, usage: &Usage) -> Vec<Meter> {
    let mut out = Vec::new();
    let budgets = &mandate.scope().budgets;
    if let Some(max) = &budgets.lifetime {
        out.push(Meter {
            name: "Lifetime".to_owned(),
            spent: i128::from(usage.spent.minor_units()),
            held: i128::from(usage.held.minor_units()),
            max: i128::from(max.minor_units()),
            text: format!(
                "spent {} · held {} · limit {}",
                usage.spent, usage.held, max
            ),
        });
    }
    for w in &budgets.windows {
        let name = window_name(w.window_seconds);
        let used = usage.window(w.window_seconds);
        if let Some(max) = &w.max_amount {
            let amount = used.map_or(0, |u| u.amount.minor_units());
            let shown =
                used.map_or_else(|| format!("0 {}", max.currency()), |u| u.amount.to_string());
            out.push(Meter {
                name: format!("{} amount", capitalise(&name)),
                spent: i128::from(amount),
                held: 0,
                max: i128::from(max.minor_units()),
                text: format!("held + spent {shown} · limit {max}"),
            });
        }
        if let Some(max) = w.max_count {
            let count = used.map_or(0, |u| u.count);
            out.push(Meter {
                name: format!("{} payments", capitalise(&name)),
                spent: i128::from(count),
                held: 0,
                max: i128::from(max),
                text: format!("{count} of {max} payments"),
            });
        }
    }
    if let Some(max) = mandate.scope().max_uses {
        out.push(Meter {
            name: "Uses".to_owned(),
            spent: i128::from(usage.uses),
            held: 0,
            max: i128::from(max),
            text: format!("{} of {} uses", usage.uses, max),
        });
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The width of `part` of `max` on a 1000-unit bar.
fn width(part: i128, max: i128) -> i128 {
    if max <= 0 {
        return if part > 0 { 1000 } else { 0 };
    }
    (part.max(0) * 1000 / max).min(1000)
}

/// A meter as an inline SVG bar with its label: spent, then held, on the track, and the 80%
/// mark.
pub(crate) fn bar(m: &Meter) -> Markup {
    use palette::*;
    let spent = width(m.spent, m.max);
    let held = width(m.spent + m.held, m.max) - spent;
    let percent = m.percent();
    let near = percent >= MARK_PERCENT;
    let mark = MARK_PERCENT * 10;
    let label = format!("{}: {} ({percent}%)", m.name, m.text);
    html! {
        svg.bar viewBox="0 0 1000 20" preserveAspectRatio="none" role="img" aria-label=(label) {
            rect x="0" y="0" width="1000" height="20" fill=(TRACK) {}
            rect x="0" y="0" width=(spent) height="20" fill=(SPENT) {}
            @if held > 0 {
                rect x=(spent) y="0" width=(held) height="20" fill=(HELD) {}
                rect x=(spent) y="0" width="3" height="20" fill=(BACKGROUND) {}
            }
            rect x=(mark - 3) y="0" width="6" height="20" fill=(MARK) {}
        }
        p.barlabel {
            strong { (m.name) } " · " (m.text) " · " (percent) "%"
            @if near { " " span.warn { strong { "at or past 80%" } } }
        }
    }
}

/// The legend of the bars.
pub(crate) fn legend() -> Markup {
    html! {
        p.meta.legend {
            "Bars:" span.ls {} "spent" span.lh {} "held (authorized, not settled)" span.lm {} "80% mark"
        }
    }
}
