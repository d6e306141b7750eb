//! A bound on how deeply a config file nests, checked on the text before
//! the YAML parser sees it.
//!
//! libyaml (under serde_yaml) looks at every open flow level for each token
//! it reads, so time grows with length times depth: a 200 KB file of nested
//! `[[[[...` ran past a minute. A real config nests six or seven levels.
//! This scan is one pass over the text; it counts block indentation levels,
//! `- ` entries opened on one line and flow brackets (outside quotes,
//! comments and block scalars). It may count a level too few in unusual
//! layouts, never a bracket that is text, so it refuses nothing a person
//! would write.

use anyhow::{bail, Result};

/// Deeper than any config this service reads, by a wide margin.
pub const MAX_DEPTH: usize = 64;

pub fn check(text: &str) -> Result<()> {
    let mut scan = Scan::default();
    for (n, line) in text.lines().enumerate() {
        let depth = scan.line(line);
        if depth > MAX_DEPTH {
            bail!(
                "line {}: nested more than {MAX_DEPTH} levels deep; no cvp-stream setting needs that",
                n + 1
            );
        }
    }
    Ok(())
}

#[derive(Default)]
struct Scan {
    /// Indentation of the open block nodes.
    indents: Vec<usize>,
    /// Open `[` and `{`.
    flow: usize,
    /// Inside a block scalar (`|`, `>`) whose key line was indented so:
    /// lines indented more are text.
    block_scalar: Option<usize>,
    /// Inside a quoted scalar that goes on past the end of a line.
    quote: Option<char>,
}

impl Scan {
    /// Takes one line; returns the nesting depth reached on it.
    fn line(&mut self, line: &str) -> usize {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        if let Some(at) = self.block_scalar {
            if content.is_empty() || indent > at {
                return self.indents.len();
            }
            self.block_scalar = None;
        }
        if self.flow > 0 || self.quote.is_some() {
            return self.flow_text(content, self.indents.len());
        }
        if content.is_empty() || content.starts_with('#') {
            return self.indents.len();
        }
        while self.indents.last().is_some_and(|&i| i >= indent) {
            self.indents.pop();
        }
        self.indents.push(indent);
        let mut depth = self.indents.len();
        // `- - - x`: each dash opens a sequence on this line.
        let mut rest = content;
        while let Some(r) = rest
            .strip_prefix("- ")
            .or(if rest == "-" { Some("") } else { None })
        {
            depth += 1;
            rest = r.trim_start_matches(' ');
        }
        // The node's value: `[`/`{` opens flow only where a node starts.
        let value = if rest.starts_with(['[', '{']) {
            rest
        } else {
            match key_end(rest) {
                Some(i) => rest[i..].trim_start_matches(' '),
                None => "",
            }
        };
        if value.starts_with(['[', '{']) {
            return self.flow_text(value, depth);
        }
        if value.starts_with(['|', '>']) {
            self.block_scalar = Some(indent);
        } else if value.starts_with(['"', '\'']) {
            // A quoted value may go on past this line.
            self.flow_text(value, depth);
        }
        depth
    }

    /// Counts brackets in flow text, skipping quoted scalars (which may span
    /// lines) and comments.
    fn flow_text(&mut self, text: &str, base: usize) -> usize {
        let mut deepest = base + self.flow;
        let mut chars = text.chars().peekable();
        let mut previous = ' ';
        while let Some(c) = chars.next() {
            match self.quote {
                Some('"') => match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => self.quote = None,
                    _ => {}
                },
                Some(_) => {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            self.quote = None;
                        }
                    }
                }
                None => match c {
                    '"' | '\'' => self.quote = Some(c),
                    '#' if previous == ' ' => break,
                    '[' | '{'
                        if self.flow > 0
                            || previous == ' '
                            || previous == '['
                            || previous == '{'
                            || previous == ',' =>
                    {
                        self.flow += 1;
                        deepest = deepest.max(base + self.flow);
                    }
                    ']' | '}' if self.flow > 0 => self.flow -= 1,
                    _ => {}
                },
            }
            previous = c;
        }
        deepest
    }
}

/// Where a `key: value` line's value starts (after `: `), outside quotes.
fn key_end(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') if i == 0 => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'#') if i > 0 && bytes[i - 1] == b' ' => return None,
            (None, b':') if bytes.get(i + 1).is_none_or(|n| *n == b' ') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configs_pass() {
        for file in [
            "config/example.yaml",
            "config/seed.yaml",
            "config/pipeline-tests.yaml",
            "deploy/systemd/config.yaml",
        ] {
            let text = std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
            check(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        // Brackets that are text: quoted, commented, in a block scalar, or
        // inside a plain scalar.
        check("a: \"[[[[[\"\nb: '{{{{'\nc: x[0 # [[[[[\nd: |\n  [[[[[[[[\n  {{{{{{{\ne: {f: [1, 2]}\n")
            .unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        let flow = format!("a: 1\nb: {}{}\n", "[".repeat(65), "]".repeat(65));
        let e = check(&flow).unwrap_err().to_string();
        assert!(e.starts_with("line 2: nested more than 64"), "{e}");
        let block: String = (0..70)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check(&block)
            .unwrap_err()
            .to_string()
            .starts_with("line 65:"));
        let dashes = format!("x:\n  {}1\n", "- ".repeat(70));
        assert!(check(&dashes).is_err());
        let spread = format!("a: [\n{}\n]\n", "[\n".repeat(70));
        assert!(check(&spread).is_err());
        // Just within the bound.
        check(&format!("b: {}{}\n", "[".repeat(63), "]".repeat(63))).unwrap();
    }
}
