//! Re-formattings of a JSON body that keep its key order and string escapes, so `verify` can
//! tell whether a body was re-serialised after it was signed.
//!
//! They work on the token stream rather than on a parsed value, because a parsed
//! `serde_json::Value` sorts keys and a re-serialiser in the middle (JavaScript's
//! `JSON.stringify`, Python's `json.dumps`) usually keeps them in order.

/// How to lay out a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// No whitespace at all (`JSON.stringify(v)`, `serde_json::to_vec`).
    Compact,
    /// `, ` and `: ` on one line (Python's `json.dumps(v)`).
    Spaced,
    /// One member per line, indented by this many spaces (`JSON.stringify(v, null, 2)`).
    Pretty(usize),
}

/// `body` laid out as `layout`, or `None` when it is not balanced JSON text.
pub(crate) fn reformat(body: &[u8], layout: Layout) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut iter = body.iter().copied().peekable();
    let newline = |out: &mut Vec<u8>, depth: usize, indent: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * indent));
    };
    while let Some(byte) = iter.next() {
        if in_string {
            out.push(byte);
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'"' => {
                in_string = true;
                out.push(byte);
            }
            b'{' | b'[' => {
                out.push(byte);
                depth += 1;
                // An empty container stays `{}` / `[]` in every layout.
                while iter.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                    iter.next();
                }
                let closes = matches!(iter.peek(), Some(b'}' | b']'));
                if let (Layout::Pretty(indent), false) = (layout, closes) {
                    newline(&mut out, depth, indent);
                }
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if let Layout::Pretty(indent) = layout
                    && !matches!(out.last(), Some(b'{' | b'['))
                {
                    newline(&mut out, depth, indent);
                }
                out.push(byte);
            }
            b',' => {
                out.push(byte);
                match layout {
                    Layout::Compact => {}
                    Layout::Spaced => out.push(b' '),
                    Layout::Pretty(indent) => newline(&mut out, depth, indent),
                }
            }
            b':' => {
                out.push(byte);
                if layout != Layout::Compact {
                    out.push(b' ');
                }
            }
            other => out.push(other),
        }
    }
    (depth == 0 && !in_string).then_some(out)
}
