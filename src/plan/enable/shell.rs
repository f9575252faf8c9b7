//! Reading and editing the variables of configuration files that a shell sources:
//! `/etc/default/grub` (grub-mkconfig runs it with `/bin/sh`), `/etc/mkinitcpio.conf`
//! (bash).
//!
//! Such a file is a program, so its values are what the shell makes of the text:
//! `"quiet acpi_osi=\"Windows 2015\" splash"` is one value with a quoted space in it,
//! a backslash at the end of a line joins two lines, `(` … `)` is a bash array that
//! may span lines and hold comments, and the last assignment is the one that counts.
//! This module is a small lexer for that subset — assignments (with `export`),
//! comments, single and double quotes with their escapes, continuation lines, arrays
//! — that keeps the byte range of every value, so an edit replaces one value and
//! leaves every other byte of the file as it was.
//!
//! What only running the file could tell is reported, never guessed: a value that
//! refers to a variable (`$VAR`, `${VAR}`) or runs a command (`` `…` ``, `$(…)`) is
//! [`Word::value`] `Err`, and a file that runs commands of its own (`if`, `.`,
//! anything that is not an assignment) is a [`ShellError`]. Callers then leave the
//! file alone and tell the user what to change by hand.

use std::ops::Range;

/// Why a file cannot be read as plain shell assignments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ShellError {
    /// The line (from 1) where the problem starts.
    pub line: usize,
    /// What is there.
    pub reason: String,
}

/// One shell word as written, and its value after quote removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Its bytes in the file.
    pub span: Range<usize>,
    /// The value the shell gives it, or why passthru cannot know it.
    pub value: Result<String, String>,
}

/// What is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assigned {
    /// `NAME=word` (the word may be empty).
    Scalar(Word),
    /// `NAME=( word … )`: `open` and `close` are the offsets of the parentheses.
    Array {
        /// Offset of `(`.
        open: usize,
        /// Offset of `)`.
        close: usize,
        /// The elements, in order.
        words: Vec<Word>,
    },
}

/// One assignment of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The variable.
    pub name: String,
    /// The line (from 1) it starts on.
    pub line: usize,
    /// `NAME+=…` (bash appends) rather than `NAME=…`.
    pub append: bool,
    /// Its value.
    pub value: Assigned,
}

impl Assignment {
    /// The scalar value, or why it cannot be edited as one.
    pub fn scalar(&self) -> Result<(&Word, &str), String> {
        let Assigned::Scalar(w) = &self.value else {
            return Err(format!(
                "line {}: {} is an array, not a string",
                self.line, self.name
            ));
        };
        if self.append {
            return Err(format!(
                "line {}: {}+= appends to a value set elsewhere",
                self.line, self.name
            ));
        }
        match &w.value {
            Ok(v) => Ok((w, v)),
            Err(why) => Err(format!("line {}: {} {why}", self.line, self.name)),
        }
    }
}

/// Every assignment of `text`, in order, or why the file is more than assignments.
pub fn assignments(text: &str) -> Result<Vec<Assignment>, ShellError> {
    let mut lx = Lexer { text, pos: 0 };
    let mut out = Vec::new();
    loop {
        lx.skip_blanks();
        let Some(c) = lx.peek() else { break };
        match c {
            b'\n' | b';' => lx.pos += 1,
            b'#' => lx.skip_comment(),
            _ => lx.command(&mut out)?,
        }
    }
    Ok(out)
}

/// The last assignment to `name`, `+=` included: for a string that is the value the
/// shell keeps unless it is a `+=` (which [`Assignment::scalar`] refuses); an array's
/// elements are those of its last `=` and every `+=` after it.
pub fn last<'a>(list: &'a [Assignment], name: &str) -> Option<&'a Assignment> {
    list.iter().rev().find(|a| a.name == name)
}

/// `value` written as a shell word in the style of `raw`, the word it replaces:
/// single quotes stay single when they can, a bare word stays bare when it needs no
/// quotes, and everything else is double-quoted with `\ " $ `` ` escaped.
pub fn quote_like(raw: &str, value: &str) -> String {
    let bare_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.,:=/+@%".contains(&b));
    if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') && !value.contains('\'') {
        return format!("'{value}'");
    }
    if !raw.is_empty() && !raw.contains(['\'', '"', '\\']) && bare_ok {
        return value.to_string();
    }
    let mut s = String::from("\"");
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// `text` with the assignment `line` (`NAME=…`, no newline) added at its end, on a
/// line of its own — or why the shell would not read it so: after a last line that
/// ends in a lone `\`, the shell joins the new line to it (`A=x\` then `B=y` reads as
/// `A=xB=y`). The result is read back, and must end with an assignment to `name`.
pub fn append(text: &str, name: &str, line: &str) -> Result<String, ShellError> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let backslashes = body.bytes().rev().take_while(|&b| b == b'\\').count();
    let last_line = body.lines().count().max(1);
    if backslashes % 2 == 1 {
        return Err(ShellError {
            line: last_line,
            reason: "the file ends in a line continued with `\\`, which would join a \
                     line added after it"
                .into(),
        });
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    let list = assignments(&out)?;
    if list.last().map(|a| a.name.as_str()) != Some(name) {
        return Err(ShellError {
            line: last_line,
            reason: format!("`{line}` added at the end would not read as an assignment of {name}"),
        });
    }
    Ok(out)
}

/// Replaces byte ranges of `text` (which must not overlap).
pub fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_string();
    for (r, new) in edits {
        out.replace_range(r, &new);
    }
    out
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

const REFERS: &str = "refers to a variable, whose value passthru cannot know";
const RUNS: &str = "runs a command, whose output passthru cannot know";

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.text.as_bytes().get(i).copied()
    }

    fn line_of(&self, pos: usize) -> usize {
        self.text.as_bytes()[..pos.min(self.text.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, pos: usize, reason: impl Into<String>) -> ShellError {
        ShellError {
            line: self.line_of(pos),
            reason: reason.into(),
        }
    }

    /// Spaces, tabs and backslash-newline continuations.
    fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.pos += 1,
                Some(b'\\') if self.at(self.pos + 1) == Some(b'\n') => self.pos += 2,
                _ => return,
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' {
                return;
            }
            self.pos += 1;
        }
    }

    /// The next character as text (the text is UTF-8; special characters are ASCII).
    fn take_char(&mut self, out: &mut String) {
        if let Some(c) = self.text[self.pos..].chars().next() {
            out.push(c);
            self.pos += c.len_utf8();
        }
    }

    /// One simple command: assignments (after an optional `export`), nothing else.
    fn command(&mut self, out: &mut Vec<Assignment>) -> Result<(), ShellError> {
        let start = self.pos;
        let mut export = false;
        let rest = &self.text[self.pos..];
        if rest.starts_with("export") && matches!(self.at(self.pos + 6), Some(b' ' | b'\t')) {
            export = true;
            self.pos += 6;
            self.skip_blanks();
        }
        let mut any = export;
        loop {
            match self.peek() {
                None | Some(b'\n' | b';') => break,
                Some(b'#') => {
                    self.skip_comment();
                    break;
                }
                _ => {}
            }
            if let Some(a) = self.assignment()? {
                out.push(a);
                any = true;
            } else if export {
                // `export NAME`: marks a variable, assigns nothing.
                let w = self.word(false)?;
                let name = w.value.unwrap_or_default();
                if name.is_empty() || !name.bytes().all(is_name) {
                    return Err(self.error(w.span.start, "an `export` of something odd"));
                }
            } else {
                let w = self.word(false)?;
                let shown = &self.text[w.span.clone()];
                let shown = if shown.is_empty() {
                    self.text[self.pos..]
                        .chars()
                        .next()
                        .map(String::from)
                        .unwrap_or_default()
                } else {
                    shown.chars().take(40).collect()
                };
                return Err(self.error(
                    start,
                    format!("runs a command (`{shown}`) where passthru expects only assignments"),
                ));
            }
            self.skip_blanks();
        }
        if !any {
            return Err(self.error(start, "an empty command"));
        }
        Ok(())
    }

    /// `NAME=value` or `NAME+=value` at the current position, if there is one.
    fn assignment(&mut self) -> Result<Option<Assignment>, ShellError> {
        let b = self.text.as_bytes();
        let start = self.pos;
        if !self.peek().is_some_and(is_name_start) {
            return Ok(None);
        }
        let mut i = start;
        while i < b.len() && is_name(b[i]) {
            i += 1;
        }
        let (append, value_at) = match (self.at(i), self.at(i + 1)) {
            (Some(b'='), _) => (false, i + 1),
            (Some(b'+'), Some(b'=')) => (true, i + 2),
            _ => return Ok(None),
        };
        let name = self.text[start..i].to_string();
        let line = self.line_of(start);
        self.pos = value_at;
        let value = if self.peek() == Some(b'(') {
            self.array()?
        } else {
            Assigned::Scalar(self.word(false)?)
        };
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n' | b';') => {}
            Some(b'\\') if self.at(self.pos + 1) == Some(b'\n') => {}
            Some(c) => {
                return Err(self.error(
                    self.pos,
                    format!("`{}` after the value of {name}", c as char),
                ))
            }
        }
        Ok(Some(Assignment {
            name,
            line,
            append,
            value,
        }))
    }

    /// A bash array `( … )`, from its `(`.
    fn array(&mut self) -> Result<Assigned, ShellError> {
        let open = self.pos;
        self.pos += 1;
        let mut words = Vec::new();
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Err(self.error(open, "an array whose `)` never comes")),
                Some(b'\n') => self.pos += 1,
                Some(b'#') => self.skip_comment(),
                Some(b')') => {
                    let close = self.pos;
                    self.pos += 1;
                    return Ok(Assigned::Array { open, close, words });
                }
                Some(_) => {
                    let w = self.word(true)?;
                    if w.span.is_empty() {
                        return Err(self.error(self.pos, "an odd character in an array"));
                    }
                    words.push(w);
                }
            }
        }
    }

    /// One word from the current position (possibly empty).
    fn word(&mut self, in_array: bool) -> Result<Word, ShellError> {
        let start = self.pos;
        let mut out = String::new();
        let mut unknown: Option<&'static str> = None;
        if self.peek() == Some(b'~') {
            unknown = Some("starts with `~`, a home directory passthru does not expand");
        }
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => break,
                b'\\' => match self.at(self.pos + 1) {
                    Some(b'\n') => self.pos += 2,
                    Some(_) => {
                        self.pos += 1;
                        self.take_char(&mut out);
                    }
                    None => self.pos += 1,
                },
                b'\'' => {
                    let Some(end) = self.text[self.pos + 1..].find('\'') else {
                        return Err(self.error(self.pos, "a single quote that is never closed"));
                    };
                    out.push_str(&self.text[self.pos + 1..self.pos + 1 + end]);
                    self.pos += end + 2;
                }
                b'"' => self.double(&mut out, &mut unknown)?,
                b'$' => self.dollar(false, &mut out, &mut unknown)?,
                b'`' => {
                    self.backtick()?;
                    unknown = Some(RUNS);
                }
                b'*' | b'?' | b'[' if in_array => {
                    // Pathname expansion happens in array elements.
                    unknown = Some("is a pattern the shell expands to file names");
                    self.take_char(&mut out);
                }
                _ => self.take_char(&mut out),
            }
        }
        Ok(Word {
            span: start..self.pos,
            value: match unknown {
                Some(why) => Err(why.to_string()),
                None => Ok(out),
            },
        })
    }

    /// A double-quoted part, from its `"`.
    fn double(
        &mut self,
        out: &mut String,
        unknown: &mut Option<&'static str>,
    ) -> Result<(), ShellError> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err(self.error(open, "a double quote that is never closed")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => match self.at(self.pos + 1) {
                    Some(b'\n') => self.pos += 2,
                    Some(b'$' | b'`' | b'"' | b'\\') => {
                        self.pos += 1;
                        self.take_char(out);
                    }
                    // Any other backslash is itself.
                    _ => {
                        out.push('\\');
                        self.pos += 1;
                    }
                },
                Some(b'$') => self.dollar(true, out, unknown)?,
                Some(b'`') => {
                    self.backtick()?;
                    *unknown = Some(RUNS);
                }
                Some(_) => self.take_char(out),
            }
        }
    }

    /// A `$` expansion, from its `$`; a `$` that starts none is itself.
    fn dollar(
        &mut self,
        in_double: bool,
        out: &mut String,
        unknown: &mut Option<&'static str>,
    ) -> Result<(), ShellError> {
        let at = self.pos;
        match self.at(at + 1) {
            Some(b'{') => {
                let Some(end) = self.text[at..].find('}') else {
                    return Err(self.error(at, "a `${` that is never closed"));
                };
                self.pos = at + end + 1;
                *unknown = Some(REFERS);
            }
            Some(b'(') => {
                self.pos = at + 1;
                self.parens()?;
                *unknown = Some(RUNS);
            }
            Some(b'\'') if !in_double => {
                // bash's $'…' with C escapes.
                let mut i = at + 2;
                loop {
                    match self.at(i) {
                        None => return Err(self.error(at, "a `$'` that is never closed")),
                        Some(b'\\') => i += 2,
                        Some(b'\'') => break,
                        Some(_) => i += 1,
                    }
                }
                self.pos = i + 1;
                *unknown = Some("is a $'…' string, which passthru does not decode");
            }
            Some(c) if is_name_start(c) => {
                let mut i = at + 1;
                while self.at(i).is_some_and(is_name) {
                    i += 1;
                }
                self.pos = i;
                *unknown = Some(REFERS);
            }
            Some(c) if c.is_ascii_digit() || b"@*#?-$!".contains(&c) => {
                self.pos = at + 2;
                *unknown = Some(REFERS);
            }
            _ => {
                out.push('$');
                self.pos = at + 1;
            }
        }
        Ok(())
    }

    /// `( … )` with nesting and quotes, from its `(`.
    fn parens(&mut self) -> Result<(), ShellError> {
        let open = self.pos;
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(self.error(open, "a `$(` that is never closed")),
                Some(b'(') => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(b')') => {
                    depth -= 1;
                    self.pos += 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(b'\\') => self.pos += 2,
                Some(b'\'') => {
                    let Some(end) = self.text[self.pos + 1..].find('\'') else {
                        return Err(self.error(self.pos, "a single quote that is never closed"));
                    };
                    self.pos += end + 2;
                }
                Some(b'"') => {
                    let mut ignored = String::new();
                    let mut u = None;
                    self.double(&mut ignored, &mut u)?;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// `` `…` ``, from its first backquote.
    fn backtick(&mut self) -> Result<(), ShellError> {
        let open = self.pos;
        let mut i = open + 1;
        loop {
            match self.at(i) {
                None => return Err(self.error(open, "a backquote that is never closed")),
                Some(b'\\') => i += 2,
                Some(b'`') => break,
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn value_of(text: &str, name: &str) -> Result<String, String> {
        let list = assignments(text).map_err(|e| e.to_string())?;
        let a = last(&list, name).ok_or("absent")?;
        a.scalar().map(|(_, v)| v.to_string())
    }

    #[test]
    fn quoting_styles() {
        let cases: &[(&str, &str)] = &[
            (
                r#"X="quiet acpi_osi=\"Windows 2015\" splash""#,
                r#"quiet acpi_osi="Windows 2015" splash"#,
            ),
            (r#"X="a \\ b \$c \`d\` \e""#, r"a \ b $c `d` \e"),
            ("X='quiet \"x\" $HOME'", "quiet \"x\" $HOME"),
            ("X=quiet", "quiet"),
            ("X=", ""),
            ("X=\"a\"'b'c", "abc"),
            ("X=\"quiet\" # the default\n", "quiet"),
            ("export X=\"quiet splash\"", "quiet splash"),
            ("X=\"quiet \\\nsplash\"", "quiet splash"),
            ("X=quiet\\\n", "quiet"),
            ("X=a\\ b", "a b"),
            ("X='one'\nX='two'\n", "two"),
            ("X=1; Y=2 X=3", "3"),
            ("X=\"a$\"", "a$"),
        ];
        for (text, want) in cases {
            assert_eq!(value_of(text, "X").as_deref(), Ok(*want), "{text}");
        }
    }

    #[test]
    fn what_only_the_shell_knows_is_unknown() {
        for text in [
            "X=\"$X iommu=pt\"",
            "X=\"${X} iommu=pt\"",
            "X=$X",
            "X=\"`cat /etc/cmdline`\"",
            "X=$(cat /etc/cmdline)",
            "X=~/x",
            "X=$'a\\tb'",
        ] {
            let v = value_of(text, "X");
            assert!(v.is_err(), "{text}: {v:?}");
        }
        // Ubuntu's GRUB_DISTRIBUTOR: unknown, and the file still reads.
        let ubuntu = "GRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Ubuntu} ) 2>/dev/null || echo Ubuntu`\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n";
        assert_eq!(
            value_of(ubuntu, "GRUB_CMDLINE_LINUX_DEFAULT").as_deref(),
            Ok("quiet splash")
        );
        assert!(value_of(ubuntu, "GRUB_DISTRIBUTOR").is_err());
        // Fedora's, with a `$(…)` holding quotes and a `$` of its own.
        let fedora = "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX=\"rhgb quiet\"\nGRUB_ENABLE_BLSCFG=true\n";
        assert_eq!(
            value_of(fedora, "GRUB_CMDLINE_LINUX").as_deref(),
            Ok("rhgb quiet")
        );
        assert!(value_of(fedora, "GRUB_DISTRIBUTOR").is_err());
    }

    #[test]
    fn files_that_run_commands_or_do_not_parse_are_errors() {
        for (text, line) in [
            ("A=1\nif [ -e /x ]; then\n  X=2\nfi\n", 2),
            ("X=\"never closed\nY=1\n", 1),
            (". /etc/default/grub.d/x.cfg\n", 1),
            ("MODULES=(a b\n", 1),
            ("X='a\n", 1),
            ("X=a|b\n", 1),
        ] {
            let e = assignments(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn arrays_across_lines_with_comments() {
        let text = "MODULES=(\n  nvidia # the GPU\n  \"nvidia_drm\"\n)\nFILES=()\n";
        let list = assignments(text).unwrap();
        let Assigned::Array { open, close, words } = &last(&list, "MODULES").unwrap().value else {
            panic!()
        };
        assert_eq!(
            &text[*open..=*close],
            "(\n  nvidia # the GPU\n  \"nvidia_drm\"\n)"
        );
        let values: Vec<_> = words.iter().map(|w| w.value.clone().unwrap()).collect();
        assert_eq!(values, ["nvidia", "nvidia_drm"]);
        assert!(matches!(
            &last(&list, "FILES").unwrap().value,
            Assigned::Array { words, .. } if words.is_empty()
        ));
    }

    /// Found by the fuzzer: a file whose last line ends in `\` would swallow the line
    /// added after it.
    #[test]
    fn a_line_is_appended_only_where_the_shell_reads_it_alone() {
        for text in ["confFULES=_drm\\", "A=1\nB=x\\\n"] {
            let e = append(text, "MODULES", "MODULES=(vfio)").unwrap_err();
            assert!(e.reason.contains("continued"), "{e}");
        }
        assert_eq!(
            append("A=x\\\\", "MODULES", "MODULES=(vfio)").unwrap(),
            "A=x\\\\\nMODULES=(vfio)\n"
        );
        assert_eq!(append("", "B", "B=1").unwrap(), "B=1\n");
        assert_eq!(append("A=1\n", "B", "B=1").unwrap(), "A=1\nB=1\n");
    }

    #[test]
    fn quote_like_keeps_the_style() {
        assert_eq!(
            quote_like("\"quiet\"", "quiet iommu=pt"),
            "\"quiet iommu=pt\""
        );
        assert_eq!(quote_like("'quiet'", "quiet iommu=pt"), "'quiet iommu=pt'");
        assert_eq!(quote_like("quiet", "quiet,x"), "quiet,x");
        assert_eq!(quote_like("quiet", "quiet x"), "\"quiet x\"");
        assert_eq!(quote_like("", ""), "\"\"");
        assert_eq!(quote_like("'a'", "acpi_osi='x' b"), "\"acpi_osi='x' b\"");
        assert_eq!(
            quote_like("\"x\"", "acpi_osi=\"Windows 2015\" $`\\"),
            "\"acpi_osi=\\\"Windows 2015\\\" \\$\\`\\\\\""
        );
        // What quote_like writes reads back as the value.
        for v in ["a \"b c\" $d `e` \\f 'g'", "", "plain"] {
            for raw in ["\"x\"", "'x'", "x", ""] {
                let text = format!("X={}", quote_like(raw, v));
                assert_eq!(value_of(&text, "X").as_deref(), Ok(v), "{text}");
            }
        }
    }

    /// The values agree with what a real `sh` makes of the same text.
    #[test]
    fn values_agree_with_sh() {
        let texts = [
            r#"X="quiet acpi_osi=\"Windows 2015\" splash""#,
            r#"X="a \\ b \$c \`d\` \e \\""#,
            "X='quiet \"x\" \\ y'",
            "X=plain",
            "X=",
            "X=\"a\"'b'c\\ d",
            "X=\"quiet\" # the default",
            "export X=\"quiet splash\"",
            "X=\"quiet \\\nsplash\"",
            "X=quiet\\\nsplash",
            "X='one'\nX='two' ; Y=1",
            "X=\"a$\" Y=2",
            "X=\"multi\nline\"",
            "X=\"é ü\" # ünïcode",
            "  X=indented\t# tab",
        ];
        for text in texts {
            // read-only probe: the real sh evaluates the text and prints $X, to compare
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{text}\nprintf '%s' \"$X\""))
                .output()
                .unwrap();
            assert!(out.status.success(), "{text}");
            let sh = String::from_utf8(out.stdout).unwrap();
            assert_eq!(value_of(text, "X"), Ok(sh), "{text}");
        }
    }

    /// Whatever the text, the lexer answers and never panics.
    #[test]
    fn any_text_is_an_answer() {
        let alphabet: Vec<char> = "X=()\"'\\$`{}#;|& \t\néa_-~*[?+".chars().collect();
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut text = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = assignments(&text);
            let _ = assignments(&format!("X={text}"));
        }
    }
}
