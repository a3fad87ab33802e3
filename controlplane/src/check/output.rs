//! How `weft check` prints its report: `short` (one line per check, and for each warning
//! or failure an indented `hint:` and `fix:`), `wide` (the same, with each check's detail —
//! versions, expiry dates, counts — after its description) and `json`
//! (`{"success", "categories": [{"name", "checks": [{"description", "result", "hint"?,
//! "fix"?, "detail"?}]}]}`, details always included).
//!
//! Glyphs: `✔` success, `‼` warning, `✖` failure (Linkerd prints `×` on some terminals;
//! Weft always prints `✖`).

use super::checks::{Category, Outcome};
use crate::cli::CheckFormat;
use serde::Serialize;

/// A success line.
pub const OK: &str = "✔";
/// A warning line.
pub const WARN: &str = "‼";
/// A failure line.
pub const FAIL: &str = "✖";

/// Whether nothing failed (warnings allowed).
pub fn success(categories: &[Category]) -> bool {
    !categories.iter().any(Category::failed)
}

fn glyph(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => OK,
        Outcome::Warning => WARN,
        Outcome::Error => FAIL,
    }
}

/// The report in `format`, ending with a newline.
pub fn render(categories: &[Category], format: CheckFormat) -> String {
    match format {
        CheckFormat::Short => text(categories, false),
        CheckFormat::Wide => text(categories, true),
        CheckFormat::Json => json(categories),
    }
}

/// Indents every line after the first by `indent` spaces.
fn continued(s: &str, indent: usize) -> String {
    s.replace('\n', &format!("\n{}", " ".repeat(indent)))
}

fn text(categories: &[Category], wide: bool) -> String {
    let mut out = String::new();
    for (i, cat) in categories.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}\n{}\n",
            cat.name,
            "-".repeat(cat.name.chars().count())
        ));
        for c in &cat.checks {
            out.push_str(&format!("{} {}", glyph(c.result), c.description));
            if let (true, Some(d)) = (wide, &c.detail) {
                out.push_str(&format!(" ({d})"));
            }
            out.push('\n');
            if let Some(h) = &c.hint {
                out.push_str(&format!("    hint: {}\n", continued(h, 10)));
            }
            if let Some(f) = &c.fix {
                out.push_str(&format!("    fix:  {}\n", continued(f, 10)));
            }
        }
    }
    let count = |o: Outcome| {
        categories
            .iter()
            .flat_map(|c| &c.checks)
            .filter(|c| c.result == o)
            .count()
    };
    let (failures, warnings) = (count(Outcome::Error), count(Outcome::Warning));
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    out.push_str(&match (failures, warnings) {
        (0, 0) => format!("\nStatus check results are {OK}\n"),
        (0, w) => format!(
            "\nStatus check results are {WARN} ({})\n",
            plural(w, "warning")
        ),
        (f, w) => format!(
            "\nStatus check results are {FAIL} ({}, {})\n",
            plural(f, "failure"),
            plural(w, "warning")
        ),
    });
    out
}

#[derive(Serialize)]
struct Report<'a> {
    success: bool,
    categories: &'a [Category],
}

fn json(categories: &[Category]) -> String {
    let report = Report {
        success: success(categories),
        categories,
    };
    let mut s = serde_json::to_string_pretty(&report)
        .unwrap_or_else(|e| format!("{{\"success\": false, \"error\": {:?}}}", e.to_string()));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::checks::Check;

    fn report() -> Vec<Category> {
        vec![
            Category {
                name: "one".into(),
                checks: vec![
                    Check::ok("fine").detail("1/1"),
                    Check::warn("meh", "why", "kubectl a\nkubectl b").detail("2 pods"),
                ],
            },
            Category {
                name: "two".into(),
                checks: vec![Check::fail("broken", "because", "fix it")],
            },
        ]
    }

    #[test]
    fn check_output_short_and_wide() {
        let short = "one\n---\n✔ fine\n‼ meh\n    hint: why\n    fix:  kubectl a\n          kubectl b\n\ntwo\n---\n✖ broken\n    hint: because\n    fix:  fix it\n\nStatus check results are ✖ (1 failure, 1 warning)\n";
        assert_eq!(render(&report(), CheckFormat::Short), short);
        let wide = render(&report(), CheckFormat::Wide);
        assert!(
            wide.starts_with("one\n---\n✔ fine (1/1)\n‼ meh (2 pods)\n"),
            "{wide}"
        );
        let mut ok = report();
        ok.truncate(1);
        assert!(
            render(&ok, CheckFormat::Short).ends_with("\nStatus check results are ‼ (1 warning)\n")
        );
        ok[0].checks.truncate(1);
        assert!(render(&ok, CheckFormat::Short).ends_with("\nStatus check results are ✔\n"));
        assert!(success(&ok));
        assert!(!success(&report()));
    }

    #[test]
    fn check_output_json() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&report(), CheckFormat::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"success": false, "categories": [
                {"name": "one", "checks": [
                    {"description": "fine", "result": "success", "detail": "1/1"},
                    {"description": "meh", "result": "warning", "hint": "why", "fix": "kubectl a\nkubectl b", "detail": "2 pods"},
                ]},
                {"name": "two", "checks": [
                    {"description": "broken", "result": "error", "hint": "because", "fix": "fix it"},
                ]},
            ]})
        );
    }
}
