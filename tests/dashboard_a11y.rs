//! Accessibility basics of the dashboard, checked on every page as served: a language, a
//! viewport, every form control labelled, every button named, every bar an image with a text
//! alternative; and the bar colours' contrast against the page background and the bar's track
//! computed (WCAG 2 relative luminance) and at least 3:1, text colours at least 4.5:1.
#![cfg(all(feature = "dashboard", feature = "testkit"))]

mod dashboard_harness;
mod dashboard_seed;

use agent_mandate::dashboard::palette;
use dashboard_harness::serve;

/// The tags `<name ...>` of `html`, as their attribute text.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        if after.starts_with([' ', '>', '/']) {
            let end = after.find('>').unwrap_or(after.len());
            out.push(&after[..end]);
        }
        rest = after;
    }
    out
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)?;
    let rest = &tag[at + key.len()..];
    Some(&rest[..rest.find('"')?])
}

/// Every problem of the page: unlabelled controls, unnamed buttons, bars without text.
fn problems(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !html.contains("<html lang=\"") {
        out.push("no lang on <html>".into());
    }
    if !html.contains("name=\"viewport\"") {
        out.push("no viewport meta".into());
    }
    let labels: Vec<&str> = tags(html, "label")
        .into_iter()
        .filter_map(|t| attr(t, "for"))
        .collect();
    let mut controls: Vec<(&str, &str)> = Vec::new();
    for t in tags(html, "input") {
        if matches!(attr(t, "type"), Some("hidden" | "submit")) {
            continue;
        }
        controls.push(("input", t));
    }
    for name in ["select", "textarea"] {
        controls.extend(tags(html, name).into_iter().map(|t| (name, t)));
    }
    for (name, t) in controls {
        let labelled = attr(t, "aria-label").is_some_and(|l| !l.trim().is_empty())
            || attr(t, "id").is_some_and(|id| labels.contains(&id));
        if !labelled {
            out.push(format!("unlabelled <{name}{t}>"));
        }
    }
    let mut rest = html;
    while let Some(at) = rest.find("<button") {
        let after = &rest[at..];
        let end = after.find("</button>").unwrap_or(after.len());
        let inner = &after[after.find('>').map_or(0, |i| i + 1)..end];
        let text: String = strip_tags(inner);
        if text.trim().is_empty() {
            out.push(format!("unnamed button {}", &after[..end.min(80)]));
        }
        rest = &after[end.min(after.len())..];
        if end == after.len() {
            break;
        }
    }
    for t in tags(html, "svg") {
        if attr(t, "role") != Some("img") || attr(t, "aria-label").is_none_or(|l| l.is_empty()) {
            out.push(format!("svg without role=img and a label: <svg{t}>"));
        }
    }
    out
}

fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn the_checker_finds_what_it_looks_for() {
    let bad = "<html><body><input type=\"text\" id=\"x\"><select name=\"s\"></select><button type=\"submit\"><span></span></button><svg viewBox=\"0 0 1 1\"></svg></body></html>";
    let found = problems(bad);
    assert_eq!(found.len(), 6, "{found:#?}");
    let good = "<html lang=\"en\"><meta name=\"viewport\" content=\"x\"><label for=\"x\">X</label><input type=\"text\" id=\"x\"><input type=\"hidden\" name=\"csrf\"><select aria-label=\"S\"></select><button type=\"submit\">Go</button><svg role=\"img\" aria-label=\"bar\"></svg></html>";
    assert_eq!(problems(good), Vec::<String>::new());
}

#[tokio::test]
async fn every_page_labels_its_controls_and_describes_its_bars() {
    let s = serve().await;
    let evidence = format!("/activity/{}", s.seeded.booked);
    let mut controls = 0;
    for path in [
        "/",
        "/activity",
        "/activity?agent=agent_booker",
        evidence.as_str(),
        "/waiting",
        "/mandates/mandate_travel",
        "/stop",
        "/stop/agents/agent_planner",
        "/stop/all",
    ] {
        let p = s.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert_eq!(problems(&p.body), Vec::<String>::new(), "{path}");
        controls += tags(&p.body, "input").len() + tags(&p.body, "select").len();
    }
    assert!(controls > 10, "the pages have forms to check: {controls}");
    // The bars are drawn in the palette's colours (so the contrast below is about them).
    let overview = s.get("/").await.body;
    for (_, c) in palette::BAR_COLOURS {
        assert!(overview.contains(c), "{c} is not used on the overview");
    }
    assert!(overview.contains(palette::TRACK));
}

fn luminance(hex: &str) -> f64 {
    let h = hex.trim_start_matches('#');
    assert_eq!(h.len(), 6, "{hex}");
    let channel = |i: usize| {
        let v = f64::from(u8::from_str_radix(&h[i..i + 2], 16).expect("hex")) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4)
}

fn contrast(a: &str, b: &str) -> f64 {
    let (x, y) = (luminance(a), luminance(b));
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    (hi + 0.05) / (lo + 0.05)
}

#[test]
fn contrast_is_computed_as_wcag_defines_it() {
    assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
    assert!((contrast("#ffffff", "#ffffff") - 1.0).abs() < 1e-9);
    // A light grey bar on white would fail the check below.
    assert!(contrast("#cccccc", "#ffffff") < 3.0);
}

#[test]
fn bar_colours_stand_out_from_the_background_and_the_track() {
    for (name, colour) in palette::BAR_COLOURS {
        for (against, bg) in [
            ("background", palette::BACKGROUND),
            ("track", palette::TRACK),
        ] {
            let ratio = contrast(colour, bg);
            println!("{name} {colour} against {against} {bg}: {ratio:.2}:1");
            assert!(
                ratio >= 3.0,
                "{name} {colour} on {against} {bg}: {ratio:.2}:1"
            );
        }
    }
    for (name, colour) in [
        ("text", palette::TEXT),
        ("warning", palette::WARNING),
        ("good", palette::GOOD),
    ] {
        let ratio = contrast(colour, palette::BACKGROUND);
        assert!(ratio >= 4.5, "{name} text {colour}: {ratio:.2}:1");
    }
    // The held segment next to the spent one is also separated by a background-coloured gap,
    // so they are not told apart by hue alone.
}
