//! Parsing `iptables-save` output into data.
//!
//! `weft-init` never greps iptables output: it parses the `nat` table into a
//! [`NatTable`] (chains and rules, each rule tokenised the way
//! `iptables-restore` would read it) and decides from that data what to
//! create, keep or delete (see [`super::document`]). The format is the one
//! both the legacy and the nft variants of `iptables-save` print:
//!
//! ```text
//! # comment
//! *nat
//! :PREROUTING ACCEPT [0:0]
//! :WEFT_OUTPUT - [0:0]
//! -A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
//! COMMIT
//! ```

/// `iptables-save` output that does not have the expected shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaveError {
    /// A line that is neither a comment, table header, chain declaration,
    /// rule nor `COMMIT`.
    #[error("unexpected line {number} in iptables-save output: {line:?}")]
    UnexpectedLine {
        /// 1-based line number.
        number: usize,
        /// The line.
        line: String,
    },
    /// A double quote that is never closed.
    #[error("unterminated quote in iptables-save rule: {spec:?}")]
    UnterminatedQuote {
        /// The rule specification.
        spec: String,
    },
}

/// One `-A CHAIN …` line of the `nat` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// The chain the rule is in.
    pub chain: String,
    /// The specification exactly as printed (quoting preserved), so it can
    /// be fed back to `iptables-restore` in a `-D` line.
    pub spec: String,
    /// The specification tokenised (quotes removed).
    pub args: Vec<String>,
}

impl SavedRule {
    /// The rule's jump or goto target (`-j X` / `-g X`), if any.
    pub fn target(&self) -> Option<&str> {
        self.args
            .windows(2)
            .find(|pair| matches!(pair[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
            .map(|pair| pair[1].as_str())
    }

    /// The line as `iptables-save` printed it.
    pub fn line(&self) -> String {
        if self.spec.is_empty() {
            format!("-A {}", self.chain)
        } else {
            format!("-A {} {}", self.chain, self.spec)
        }
    }
}

/// The `nat` table as read from `iptables-save -t nat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatTable {
    /// Declared chains (built-in and user-defined), in order.
    pub chains: Vec<String>,
    /// Rules, in order.
    pub rules: Vec<SavedRule>,
}

impl NatTable {
    /// Whether `chain` is declared.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }
}

/// Parses `iptables-save` output, keeping only the `nat` table. Output with
/// no `*nat` section (the table was never loaded) is an empty table.
pub fn parse_nat(text: &str) -> Result<NatTable, SaveError> {
    let mut table = NatTable::default();
    let mut current: Option<&str> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let unexpected = || SaveError::UnexpectedLine {
            number: index + 1,
            line: line.to_owned(),
        };
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() || name.is_empty() {
                return Err(unexpected());
            }
            current = Some(name);
        } else if line == "COMMIT" {
            if current.take().is_none() {
                return Err(unexpected());
            }
        } else if let Some(declaration) = line.strip_prefix(':') {
            let Some(table_name) = current else {
                return Err(unexpected());
            };
            let name = declaration
                .split_whitespace()
                .next()
                .ok_or_else(unexpected)?;
            if table_name == "nat" {
                table.chains.push(name.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let Some(table_name) = current else {
                return Err(unexpected());
            };
            let rest = rest.trim_start();
            let (chain, spec) = match rest.split_once(' ') {
                Some((chain, spec)) => (chain, spec.trim()),
                None => (rest, ""),
            };
            if chain.is_empty() {
                return Err(unexpected());
            }
            if table_name == "nat" {
                table.rules.push(SavedRule {
                    chain: chain.to_owned(),
                    spec: spec.to_owned(),
                    args: tokenize(spec)?,
                });
            }
        } else {
            return Err(unexpected());
        }
    }
    Ok(table)
}

/// Splits a rule specification into arguments the way `iptables-restore`
/// does: whitespace separates, double quotes group, and a backslash inside
/// quotes escapes the next character.
pub fn tokenize(spec: &str) -> Result<Vec<String>, SaveError> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    args.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            c => {
                current.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err(SaveError::UnterminatedQuote {
            spec: spec.to_owned(),
        });
    }
    if in_token {
        args.push(current);
    }
    Ok(args)
}

/// Counts rules (`-A` lines) in the output of a full `iptables-save`; used
/// to tell which backend a node already uses.
pub fn count_rules(text: &str) -> usize {
    text.lines().filter(|line| line.starts_with("-A ")).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Mon Dec  7 04:35:42 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [12:720]
:POSTROUTING ACCEPT [0:0]
:WEFT_OUTPUT - [0:0]
-A PREROUTING -m comment --comment "weft/install-prerouting" -j WEFT_PREROUTING
-A OUTPUT -m comment --comment "weft/install-output" -j WEFT_OUTPUT
-A WEFT_OUTPUT -p tcp -m comment --comment "a \"quoted\" comment" -j REDIRECT --to-ports 4140
-A POSTROUTING
COMMIT
# Completed on Mon Dec  7 04:35:42 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j DROP
COMMIT
"#;

    #[test]
    fn parses_nat_only() {
        let table = parse_nat(SAMPLE).expect("valid sample");
        assert_eq!(
            table.chains,
            [
                "PREROUTING",
                "INPUT",
                "OUTPUT",
                "POSTROUTING",
                "WEFT_OUTPUT"
            ]
        );
        assert!(table.has_chain("WEFT_OUTPUT"));
        assert!(!table.has_chain("WEFT_PREROUTING"));
        assert_eq!(table.rules.len(), 4);
        let rule = &table.rules[2];
        assert_eq!(rule.chain, "WEFT_OUTPUT");
        assert_eq!(
            rule.args,
            [
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "a \"quoted\" comment",
                "-j",
                "REDIRECT",
                "--to-ports",
                "4140"
            ]
        );
        assert_eq!(rule.target(), Some("REDIRECT"));
        assert_eq!(
            rule.line(),
            r#"-A WEFT_OUTPUT -p tcp -m comment --comment "a \"quoted\" comment" -j REDIRECT --to-ports 4140"#
        );
        let bare = &table.rules[3];
        assert_eq!(
            (bare.chain.as_str(), bare.spec.as_str()),
            ("POSTROUTING", "")
        );
        assert_eq!(bare.target(), None);
        assert_eq!(bare.line(), "-A POSTROUTING");
    }

    #[test]
    fn empty_and_missing_nat() {
        assert_eq!(parse_nat(""), Ok(NatTable::default()));
        assert_eq!(
            parse_nat("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
            Ok(NatTable::default())
        );
        assert_eq!(
            parse_nat("# Warning: iptables-legacy tables present\n"),
            Ok(NatTable::default())
        );
    }

    #[test]
    fn rejects_unexpected_lines() {
        let cases: &[(&str, usize)] = &[
            ("garbage\n", 1),
            ("*nat\n-I OUTPUT -j X\nCOMMIT\n", 2),
            ("-A OUTPUT -j X\n", 1),
            (":OUTPUT ACCEPT\n", 1),
            ("*nat\n*filter\n", 2),
            ("COMMIT\n", 1),
            ("*\n", 1),
            ("*nat\n:\nCOMMIT\n", 2),
            ("*nat\n-A  \nCOMMIT\n", 2),
        ];
        for (text, number) in cases {
            match parse_nat(text) {
                Err(SaveError::UnexpectedLine { number: got, .. }) => {
                    assert_eq!(got, *number, "{text:?}")
                }
                other => panic!("{text:?}: expected UnexpectedLine, got {other:?}"),
            }
        }
        assert!(matches!(
            parse_nat("*nat\n-A OUTPUT -m comment --comment \"open\nCOMMIT\n"),
            Err(SaveError::UnterminatedQuote { .. })
        ));
    }

    #[test]
    fn tokenize_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("  -j  RETURN ", &["-j", "RETURN"]),
            (r#"--comment "a b""#, &["--comment", "a b"]),
            (r#"--comment weft/x"#, &["--comment", "weft/x"]),
            (r#"--comment """#, &["--comment", ""]),
            (r#"--comment "x\\y""#, &["--comment", "x\\y"]),
            (r#"a"b c"d"#, &["ab cd"]),
            (r"back\slash", &["back\\slash"]),
        ];
        for (spec, want) in cases {
            let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(tokenize(spec), Ok(want), "{spec:?}");
        }
        assert!(tokenize("\"open").is_err());
    }

    #[test]
    fn target_variants() {
        let rule = |spec: &str| SavedRule {
            chain: "OUTPUT".into(),
            spec: spec.into(),
            args: tokenize(spec).expect("valid"),
        };
        assert_eq!(rule("-g WEFT_OUTPUT").target(), Some("WEFT_OUTPUT"));
        assert_eq!(rule("--jump WEFT_OUTPUT").target(), Some("WEFT_OUTPUT"));
        assert_eq!(rule("-p tcp").target(), None);
    }

    #[test]
    fn count_rules_counts_append_lines() {
        assert_eq!(count_rules(SAMPLE), 5);
        assert_eq!(count_rules(""), 0);
        assert_eq!(count_rules("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"), 0);
    }
}
