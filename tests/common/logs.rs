//! Reading the lines a worker logs, in either `logging.format`.

use std::collections::BTreeMap;

/// One log line, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: String,
    pub target: String,
    /// Empty for a line with fields only (a request line).
    pub message: String,
    /// The event's fields, as text (JSON strings unquoted, numbers as written).
    pub fields: BTreeMap<String, String>,
}

impl LogLine {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// A line as `logging.format = "json"` writes it: one object, `timestamp`, `level`,
/// `target` and `message` first; `None` when `line` is not exactly that.
pub fn json_line(line: &str) -> Option<LogLine> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).ok()?;
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let timestamp = object.get("timestamp")?.as_str()?;
    assert!(timestamp.ends_with('Z') && timestamp.len() >= 20, "{line}");
    let mut fields = BTreeMap::new();
    for key in &keys {
        if !["timestamp", "level", "target", "message"].contains(key) {
            fields.insert(key.to_string(), text(&object[*key]));
        }
    }
    Some(LogLine {
        level: object.get("level")?.as_str()?.to_string(),
        target: object.get("target")?.as_str()?.to_string(),
        message: object.get("message").map(text).unwrap_or_default(),
        fields,
    })
}

/// A line as `logging.format = "text"` writes it without colours:
/// `2026-12-07T05:00:00.000000Z  INFO target: message key=value key="value"`.
pub fn text_line(line: &str) -> Option<LogLine> {
    let (timestamp, rest) = line.split_once(' ')?;
    if !(timestamp.ends_with('Z') && timestamp.as_bytes().get(4) == Some(&b'-')) {
        return None;
    }
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(' ')?;
    let (target, rest) = rest
        .split_once(": ")
        .unwrap_or((rest.trim_end_matches(':'), ""));
    // The fields are the trailing run of `key=value` words; the message is what precedes.
    let words = tokens(rest);
    fn field(word: &str) -> Option<(&str, &str)> {
        word.split_once('=').filter(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    }
    let first_field = words
        .iter()
        .rposition(|word| field(word).is_none())
        .map_or(0, |last_word| last_word + 1);
    let message: Vec<&str> = words[..first_field].iter().map(String::as_str).collect();
    let mut fields = BTreeMap::new();
    for (key, value) in words[first_field..].iter().filter_map(|word| field(word)) {
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => value.to_string(),
        };
        fields.insert(key.to_string(), value);
    }
    Some(LogLine {
        level: level.to_string(),
        target: target.to_string(),
        message: message.join(" "),
        fields,
    })
}

/// `line` read in whichever format it is in.
pub fn log_line(line: &str) -> Option<LogLine> {
    json_line(line).or_else(|| text_line(line))
}

/// Words split at spaces outside double quotes.
fn tokens(text: &str) -> Vec<String> {
    let (mut tokens, mut current, mut quoted, mut escaped) =
        (Vec::new(), String::new(), false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// The application address a start-up line announces (`listening on http://…`).
pub fn listening_address(line: &str) -> Option<std::net::SocketAddr> {
    let parsed = log_line(line)?;
    let address = parsed.message.strip_prefix("listening on http://")?;
    Some(
        address
            .parse()
            .unwrap_or_else(|e| panic!("bad listening line {line:?}: {e}")),
    )
}
