//! `${NAME}` and `${NAME:-default}` in a config file, replaced with
//! environment values before parsing, line by line so that a missing
//! variable is reported with its line. `$${` escapes a literal `${`.
//! Comments are left alone: documentation that mentions `${NAME}` must not
//! demand that NAME be set.

use anyhow::{bail, Result};

pub fn interpolate(raw: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(raw.len());
    for (lineno, line) in raw.split_inclusive('\n').enumerate() {
        let (line, comment) = line.split_at(comment_start(line));
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(stripped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    bail!("line {}: unclosed ${{ in {:?}", lineno + 1, line.trim_end());
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bail!(
                        "line {}: bad variable name {:?} in ${{...}}",
                        lineno + 1,
                        name
                    );
                }
                match (env(name), default) {
                    // A line break in a value would end the YAML line and
                    // let the value write keys of its own (a password
                    // that turns TLS verification off).
                    (Some(v), _) if v.contains(['\n', '\r']) => bail!(
                        "line {}: environment variable {name} holds a line break, which would change the config's structure; remove it (a value must fit on its line)",
                        lineno + 1
                    ),
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => bail!(
                        "line {}: environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                        lineno + 1
                    ),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment begins on `line` (its length if none): a `#` at
/// the start or after white space, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if prev.is_whitespace() => return i,
            (None, '"' | '\'') => quote = Some(c),
            // In double quotes a backslash escapes the next character.
            (Some('"'), '\\') if prev != '\\' => {}
            (Some(q), c) if c == q && !(q == '"' && prev == '\\') => quote = None,
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_not_interpolated() {
        let env = |n: &str| (n == "SET").then(|| "v".to_string());
        let text = "a: ${SET} # not ${UNSET}\n# ${UNSET} either\nb: \"x # ${SET}\"\nc: 'it''s ${SET}' # ${UNSET}\nd: x#${SET}\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: v # not ${UNSET}\n# ${UNSET} either\nb: \"x # v\"\nc: 'it''s v' # ${UNSET}\nd: x#v\n"
        );
    }

    /// CVP_PASSWORD=$'x\n    tls: { insecure_skip_verify: true }' once
    /// turned verification off; a value cannot add lines.
    #[test]
    fn a_value_with_a_line_break_is_refused() {
        let env = |_: &str| Some("x\n    tls: { insecure_skip_verify: true }".to_string());
        let err = interpolate("a: 1\npassword: ${CVP_PASSWORD}\n", env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("CVP_PASSWORD") && err.contains("line break"),
            "{err}"
        );
        assert!(
            !err.contains("insecure"),
            "the value must not be echoed: {err}"
        );
    }

    #[test]
    fn interpolation_with_defaults_and_escapes() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(
            interpolate("x: ${A} ${B:-2} $${C} $5\n", env).unwrap(),
            "x: 1 2 ${C} $5\n"
        );
        let err = interpolate("a: 1\nb: ${MISSING}\n", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("MISSING"), "{err}");
    }
}
