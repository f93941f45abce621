//! Human and machine output: aligned tables, `--json`, and the one
//! listing helper every `myco <things>` command uses.

use std::io::Write;

use serde::Serialize;

/// A thing `myco` lists: its table columns, and its row. With `--json`
/// the list is printed as the API's JSON instead.
pub trait Listing: Serialize {
    /// Column headers, upper-case.
    const COLUMNS: &'static [&'static str];
    /// One cell per column.
    fn row(&self) -> Vec<String>;
}

/// Prints `items` as a table under [`Listing::COLUMNS`], or as pretty
/// JSON with `json`.
pub fn print_listing<T: Listing>(items: &[T], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&items);
    }
    let rows: Vec<Vec<String>> = items.iter().map(Listing::row).collect();
    print(T::COLUMNS, &rows)?;
    Ok(())
}

/// Pretty JSON on standard output.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    // Encoded first, so a closed pipe is an io::Error (which `main` treats
    // as success), not a serde_json one.
    let text = serde_json::to_string_pretty(v)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// An aligned table: columns as wide as their widest cell, two spaces apart.
pub fn print(headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line =
        |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
            let parts: Vec<String> = cells
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(out, "{}", parts.join("  ").trim_end())
        };
    line(&mut out, &mut headers.iter().copied())?;
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}
