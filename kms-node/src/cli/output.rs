//! The one place that writes the CLI's output: tables, `name  value` blocks,
//! JSON (`--json`), base64, timestamps, and the one-line error convention.
//! Command files build values and hand them to [`Out::show`] or [`Out::line`].

use std::fmt::Display;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_client::proto;
use serde_json::Value;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// What a command shows without `--json`.
pub enum Human {
    /// Rows of cells, the first row the header (or the first name/value
    /// pair), columns padded to their widest cell, two spaces apart.
    Table(Vec<Vec<String>>),
    /// Lines as they are.
    Lines(Vec<String>),
    /// `name value` lines, names padded to 17 characters.
    Fields(Vec<(&'static str, String)>),
    /// The JSON value, indented.
    PrettyJson,
}

/// Where a command's output goes: a table or lines for people, one line of
/// JSON for scripts (`--json`).
#[derive(Clone, Copy)]
pub struct Out {
    json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// Prints `json` (one line) with `--json`, else `human`.
    pub fn show(&self, json: Value, human: Human) {
        let text = if self.json {
            json.to_string()
        } else {
            match human {
                Human::Table(rows) => return write_out(&table(&rows)),
                Human::Lines(lines) => lines.join("\n"),
                Human::Fields(rows) => fields(&rows),
                Human::PrettyJson => serde_json::to_string_pretty(&json).unwrap_or_default(),
            }
        };
        write_out(&format!("{text}\n"));
    }

    /// Prints one line, the same with or without `--json`.
    pub fn line(&self, s: impl Display) {
        write_out(&format!("{s}\n"));
    }

    /// Prints `text` as it is (a generated file such as a completion
    /// script), the same with or without `--json`.
    pub fn text(&self, text: &str) {
        write_out(text);
    }
}

/// Writes to stdout. A reader that went away (`kms ls-key | head`) ends
/// the command quietly, as other Unix tools do, instead of a panic.
fn write_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("kms: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Prints an error the CLI's way: `kms: <what failed>: <why>`, on stderr.
pub fn error(msg: &str) {
    eprintln!("kms: {msg}");
}

/// Prints clap's help or version text.
pub fn help(e: &clap::Error) {
    let _ = e.print();
}

/// Renders rows as a table: each column as wide as its widest cell, columns
/// two spaces apart, no trailing spaces, one `\n` per row.
pub fn table(rows: &[Vec<String>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut widths = vec![0; first.len()];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `name value` lines, names padded to 17 characters (no final newline).
fn fields(rows: &[(&str, String)]) -> String {
    let lines: Vec<String> = rows.iter().map(|(k, v)| format!("{k:<17} {v}")).collect();
    lines.join("\n")
}

/// Standard base64 with padding, as the CLI prints bytes.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A duration in seconds, for JSON.
pub fn secs(d: &Option<proto::Duration>) -> Option<f64> {
    d.as_ref()
        .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

/// A duration for people: `1.500 s`, or `-` when unknown.
pub fn duration(d: Option<f64>) -> String {
    d.map_or("-".into(), |d| format!("{d:.3} s"))
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
const TIMESTAMP: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

/// A timestamp as `2024-10-04 12:00:00 UTC` (whole seconds), or `-` when
/// there is none (absent, or not after 1970).
pub fn ts(t: &Option<proto::Timestamp>) -> String {
    match t {
        Some(t) if t.seconds > 0 => timestamp(t.seconds),
        _ => "-".into(),
    }
}

/// Seconds since 1970 as `YYYY-MM-DD HH:MM:SS UTC`; past the year 9999
/// (beyond the calendar of the `time` crate) the number of seconds itself.
fn timestamp(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(TIMESTAMP).ok())
        .unwrap_or_else(|| format!("{secs} s since 1970-01-01 UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> String {
        ts(&Some(proto::Timestamp { seconds, nanos: 0 }))
    }

    #[test]
    fn timestamps_keep_their_format() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        // Day 20,000 since 1970.
        assert_eq!(at(20_000 * 86_400), "2024-10-04 00:00:00 UTC");
        // Leap days: 2024 and 2000 (divisible by 400) have one.
        assert_eq!(at(1_709_210_096), "2024-02-29 12:34:56 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        // 2100 is not a leap year: Feb 28 is followed by Mar 1.
        assert_eq!(at(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(at(4_107_542_400), "2100-03-01 00:00:00 UTC");
        assert_eq!(at(253_402_300_799), "9999-12-31 23:59:59 UTC");
        // Nanoseconds are not shown.
        let t = proto::Timestamp {
            seconds: 1_709_210_096,
            nanos: 999_999_999,
        };
        assert_eq!(ts(&Some(t)), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn missing_timestamps_are_a_dash() {
        assert_eq!(ts(&None), "-");
        assert_eq!(at(0), "-");
        assert_eq!(at(-1), "-");
    }

    #[test]
    fn out_of_calendar_timestamps_are_seconds() {
        assert_eq!(at(253_402_300_800), "253402300800 s since 1970-01-01 UTC");
    }

    #[test]
    fn tables_pad_columns_and_trim_lines() {
        let rows = vec![
            vec!["NAME".into(), "CREATED".into(), "BY".into()],
            vec!["a-long-name".into(), "-".into(), String::new()],
        ];
        assert_eq!(table(&rows), "NAME         CREATED  BY\na-long-name  -\n");
        assert_eq!(table(&[]), "");
    }

    #[test]
    fn fields_pad_names() {
        let rows = [
            ("node", "1 (a)".to_string()),
            ("election timeout", "-".into()),
        ];
        assert_eq!(
            fields(&rows),
            "node              1 (a)\nelection timeout  -"
        );
    }
}
