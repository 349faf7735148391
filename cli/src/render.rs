//! The one `Render` seam for every listing: `-o table` (aligned columns), `-o wide` (more
//! columns), `-o json` and `-o yaml` (and `-o csv`, which only `get usage` prints). A list
//! prints as `{"items": [...]}` in JSON/YAML, one named object as the object itself, as kubectl
//! does. Views (what a row shows) live in [`crate::views`]; this module only lays them out.

use std::io::Write as _;

use serde::Serialize;

/// `-o table|wide|json|yaml|csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
    /// Only `get usage` prints CSV.
    Csv,
}

/// The error for `-o csv` anywhere but `get usage`.
pub const CSV_ONLY: &str = "-o csv is only for `get usage`";

impl Format {
    pub fn is_table(self) -> bool {
        matches!(self, Self::Table | Self::Wide)
    }
}

/// A thing that prints as a table row, and as itself in JSON/YAML.
pub trait Render: Serialize {
    /// Column headers; `wide` adds columns.
    fn headers(wide: bool) -> Vec<&'static str>;
    fn row(&self, wide: bool) -> Vec<String>;
}

#[derive(Serialize)]
struct Items<'a, T> {
    items: &'a [T],
}

/// Writes `text` to stdout through one lock. A reader that left (`| head -1`) comes back as
/// an `io::Error` of kind `BrokenPipe`, which `main` counts as success; `print!` would panic.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A list: a table, or `{"items": [...]}`.
pub fn list<T: Render>(items: &[T], f: Format) -> anyhow::Result<()> {
    print(&list_text(items, f)?)
}

/// What [`list`] prints.
pub fn list_text<T: Render>(items: &[T], f: Format) -> anyhow::Result<String> {
    if f.is_table() {
        let wide = f == Format::Wide;
        Ok(table_text(
            &T::headers(wide),
            items.iter().map(|i| i.row(wide)).collect(),
        ))
    } else {
        emit_text(&Items { items }, f)
    }
}

/// One named object: a one-row table, or the object itself.
pub fn one<T: Render>(item: &T, f: Format) -> anyhow::Result<()> {
    if f.is_table() {
        list(std::slice::from_ref(item), f)
    } else {
        emit(item, f)
    }
}

/// Any value as JSON or YAML.
pub fn emit<T: Serialize + ?Sized>(v: &T, f: Format) -> anyhow::Result<()> {
    print(&emit_text(v, f)?)
}

/// What [`emit`] prints.
pub fn emit_text<T: Serialize + ?Sized>(v: &T, f: Format) -> anyhow::Result<String> {
    match f {
        Format::Json => Ok(format!("{}\n", serde_json::to_string_pretty(v)?)),
        Format::Yaml => Ok(serde_norway::to_string(v)?),
        Format::Table | Format::Wide => anyhow::bail!("tables are printed with list() or one()"),
        Format::Csv => anyhow::bail!(CSV_ONLY),
    }
}

/// Aligned columns under a header, printed, for a verb that prints a table among other lines.
/// It returns nothing, so a stdout that cannot be written ends the process here: quietly with
/// 0 when the reader left (`| head`), else with the error's line and code.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    if let Err(e) = print(&table_text(header, rows)) {
        crate::exit::now(&e);
    }
}

/// Aligned columns under a header, one line each.
pub fn table_text(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let w = widths(&header, &rows);
    let mut out = lines_text(&w, std::slice::from_ref(&header));
    out.push_str(&lines_text(&w, &rows));
    out
}

/// The width of each column: its widest cell (in characters), the header's included.
pub fn widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    w
}

/// Rows laid out in columns of widths `w` (three spaces apart), one line each; `-w` prints
/// later rows in the columns of the first table.
pub fn lines_text(w: &[usize], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for cells in rows {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(s.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as a human size: "512Mi", "3.1Gi".
pub fn bytes(b: u64) -> String {
    const GI: f64 = (1u64 << 30) as f64;
    const MI: f64 = (1u64 << 20) as f64;
    if b as f64 >= GI {
        format!("{:.1}Gi", b as f64 / GI)
    } else {
        format!("{:.0}Mi", b as f64 / MI)
    }
}

/// Milliseconds since the epoch as an age: "5s", "3m", "2h", "4d".
pub fn age(since_ms: i64, now_ms: i64) -> String {
    if since_ms <= 0 {
        return "-".into();
    }
    let s = ((now_ms - since_ms) / 1000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_as_kubectl_prints_them() {
        assert_eq!(bytes(512 << 20), "512Mi");
        assert_eq!(bytes(3 << 30), "3.0Gi");
        assert_eq!(age(1_000, 6_000), "5s");
        assert_eq!(age(0, 6_000), "-");
        assert_eq!(age(1, 1 + 7_200_000), "2h");
    }

    #[test]
    fn tables_align_on_the_widest_cell_and_json_ends_with_a_newline() {
        let t = table_text(
            &["NAME", "STATUS"],
            vec![
                vec!["gpu-1".into(), "Ready".into()],
                vec!["a".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME    STATUS\ngpu-1   Ready\na\n");
        let w = widths(&["NAME".to_string()], &[vec!["longer-name".into()]]);
        assert_eq!(w, [11]);
        assert_eq!(lines_text(&w, &[vec!["x".into()]]), "x\n");
        let j = emit_text(&serde_json::json!({"a": 1}), Format::Json).unwrap();
        assert_eq!(j, "{\n  \"a\": 1\n}\n");
        assert!(emit_text(&1, Format::Table).is_err());
    }
}
