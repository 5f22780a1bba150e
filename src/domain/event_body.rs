//! The last guard on an audit event's body: at most [`MAX_EVENT_BODY_BYTES`].
//!
//! Input limits keep decisions small; this guard holds whatever reaches an event (a value built
//! in code without validation, many inputs each near its limit). An event whose body would be
//! larger is still written, never dropped: its longest lists are cut from the end (and texts
//! longer than [`MAX_TEXT_LEN`] cut to it, then any text still too long to 256 bytes), and the
//! event object gets a `truncated` member ([`Truncation`]) with the size and SHA-256 of the full
//! body and the original length of everything cut. The trail stays complete (one event per
//! step, chained) and bounded; the body still reads back as its event, with the marker ignored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::canonical::ContentDigest;
use super::limits::{MAX_EVENT_BODY_BYTES, MAX_TEXT_LEN};

/// Texts still too long after the lists are cut are cut to this many bytes.
const TEXT_KEEP: usize = 256;
/// Most cuts listed in the marker (further cuts are counted in `unlisted`).
const MAX_LISTED: usize = 32;
/// Most rounds of cutting before the minimal body is written.
const MAX_ROUNDS: usize = 512;

/// One cut list or text of a truncated event body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Cut")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Cut {
    /// Path of the list or text in the body (`event.blockers[0].causes`).
    pub path: String,
    /// Its original length: entries of a list, bytes of a text.
    pub original: usize,
    /// What is left of it.
    pub kept: usize,
}

/// The marker of an audit event body cut to [`MAX_EVENT_BODY_BYTES`]: written as the member
/// `truncated` of the body's `event` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Truncation")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Truncation {
    /// Size of the full body, in bytes.
    pub original_bytes: usize,
    /// SHA-256 of the full body.
    pub digest: ContentDigest,
    /// The lists cut, in the order they were cut.
    #[serde(default)]
    pub lists: Vec<Cut>,
    /// The texts cut.
    #[serde(default)]
    pub texts: Vec<Cut>,
    /// Cuts not listed (beyond 32).
    #[serde(default)]
    pub unlisted: usize,
}

impl Truncation {
    /// The marker of a body, if it was truncated.
    ///
    /// ```
    /// use agent_mandate::domain::Truncation;
    /// assert_eq!(Truncation::of_body(r#"{"at":"2026-01-01T00:00:00Z","event":{"type":"x"}}"#), None);
    /// ```
    pub fn of_body(body: &str) -> Option<Truncation> {
        let value: Value = serde_json::from_str(body).ok()?;
        let marker = value.get("event")?.get("truncated")?;
        Truncation::deserialize(marker).ok()
    }
}

/// `full` if it fits [`MAX_EVENT_BODY_BYTES`], else the body cut to fit, with its marker.
pub(crate) fn bounded(full: String) -> String {
    if full.len() <= MAX_EVENT_BODY_BYTES {
        return full;
    }
    let mut marker = Truncation {
        original_bytes: full.len(),
        digest: ContentDigest::from_bytes(Sha256::digest(full.as_bytes()).into()),
        lists: Vec::new(),
        texts: Vec::new(),
        unlisted: 0,
    };
    let Ok(mut value) = serde_json::from_str::<Value>(&full) else {
        return minimal(&Value::Null, &marker);
    };
    drop(full);
    // Texts longer than any text input can be are cut first.
    for _ in 0..MAX_ROUNDS {
        let Some((path, len)) = longest_text(&value, MAX_TEXT_LEN) else {
            break;
        };
        cut_text(&mut value, &path, MAX_TEXT_LEN, len, &mut marker);
    }
    for _ in 0..MAX_ROUNDS {
        let body = render(&value, &marker);
        if body.len() <= MAX_EVENT_BODY_BYTES {
            return body;
        }
        let excess = body.len() - MAX_EVENT_BODY_BYTES;
        if let Some(path) = longest_list(&value) {
            cut_list(&mut value, &path, excess, &mut marker);
        } else if let Some((path, len)) = longest_text(&value, TEXT_KEEP) {
            cut_text(&mut value, &path, TEXT_KEEP, len, &mut marker);
        } else {
            break;
        }
    }
    minimal(&value, &marker)
}

/// A step of a path into a value.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn path_text(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn at_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut v = value;
    for step in path {
        v = match step {
            Step::Key(k) => v.get_mut(k.as_str())?,
            Step::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

/// The non-empty list with the most entries (the first one found on a tie).
fn longest_list(value: &Value) -> Option<Vec<Step>> {
    fn walk(v: &Value, path: &mut Vec<Step>, best: &mut Option<(usize, Vec<Step>)>) {
        match v {
            Value::Array(items) => {
                if !items.is_empty() && best.as_ref().is_none_or(|(n, _)| items.len() > *n) {
                    *best = Some((items.len(), path.clone()));
                }
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    walk(item, path, best);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(Step::Key(k.clone()));
                    walk(item, path, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    walk(value, &mut Vec::new(), &mut best);
    best.map(|(_, path)| path)
}

/// The longest text over `keep` bytes, with its length.
fn longest_text(value: &Value, keep: usize) -> Option<(Vec<Step>, usize)> {
    fn walk(v: &Value, keep: usize, path: &mut Vec<Step>, best: &mut Option<(usize, Vec<Step>)>) {
        match v {
            Value::String(s)
                if s.len() > keep && best.as_ref().is_none_or(|(n, _)| s.len() > *n) =>
            {
                *best = Some((s.len(), path.clone()));
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    walk(item, keep, path, best);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(Step::Key(k.clone()));
                    walk(item, keep, path, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    walk(value, keep, &mut Vec::new(), &mut best);
    best.map(|(len, path)| (path, len))
}

fn record(list: &mut Vec<Cut>, unlisted: &mut usize, path: String, original: usize, kept: usize) {
    if let Some(c) = list.iter_mut().find(|c| c.path == path) {
        c.kept = kept;
    } else if list.len() < MAX_LISTED {
        list.push(Cut {
            path,
            original,
            kept,
        });
    } else {
        *unlisted = unlisted.saturating_add(1);
    }
}

/// Cuts entries from the end of the list at `path` until about `excess` bytes are gone (at
/// least one entry).
fn cut_list(value: &mut Value, path: &[Step], excess: usize, marker: &mut Truncation) {
    let Some(Value::Array(items)) = at_mut(value, path) else {
        return;
    };
    let original = items.len();
    // Room for the marker's own entry.
    let mut to_free = excess.saturating_add(256);
    while let Some(last) = items.pop() {
        let size = serde_json::to_vec(&last).map_or(0, |b| b.len()) + 1;
        if size >= to_free {
            break;
        }
        to_free -= size;
    }
    let kept = items.len();
    let previous = marker
        .lists
        .iter()
        .find(|c| c.path == path_text(path))
        .map_or(original, |c| c.original);
    record(
        &mut marker.lists,
        &mut marker.unlisted,
        path_text(path),
        previous,
        kept,
    );
}

fn cut_text(value: &mut Value, path: &[Step], keep: usize, len: usize, marker: &mut Truncation) {
    let Some(Value::String(s)) = at_mut(value, path) else {
        return;
    };
    let mut end = keep.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    let previous = marker
        .texts
        .iter()
        .find(|c| c.path == path_text(path))
        .map_or(len, |c| c.original);
    record(
        &mut marker.texts,
        &mut marker.unlisted,
        path_text(path),
        previous,
        end,
    );
}

/// The body with the marker in the event object.
fn render(value: &Value, marker: &Truncation) -> String {
    let mut v = value.clone();
    if let (Some(Value::Object(event)), Ok(m)) = (v.get_mut("event"), serde_json::to_value(marker))
    {
        event.insert("truncated".to_owned(), m);
    }
    serde_json::to_string(&v).unwrap_or_default()
}

/// Only the time, the event type and the marker (its lists dropped if they do not fit).
fn minimal(value: &Value, marker: &Truncation) -> String {
    let mut event = Map::new();
    if let Some(t) = value.get("event").and_then(|e| e.get("type")) {
        event.insert("type".to_owned(), t.clone());
    }
    let mut top = Map::new();
    if let Some(at) = value.get("at") {
        top.insert("at".to_owned(), at.clone());
    }
    top.insert("event".to_owned(), Value::Object(event));
    let top = Value::Object(top);
    let body = render(&top, marker);
    if body.len() <= MAX_EVENT_BODY_BYTES {
        return body;
    }
    let bare = Truncation {
        lists: Vec::new(),
        texts: Vec::new(),
        unlisted: marker.lists.len() + marker.texts.len() + marker.unlisted,
        ..marker.clone()
    };
    render(&top, &bare)
}

crate::json::object_only!(Cut);
crate::json::object_only!(Truncation);
