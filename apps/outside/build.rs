//! Collects the code examples of the doc comments of the crates the facade re-exports
//! (`holdfast::pool`, `tx`, `tasks`, `wire`) into one Markdown file that `src/lib.rs`
//! compiles as doctests here, where only holdfast's public paths exist. Those crates do not
//! run their doctests themselves (`doctest = false`): their examples are written for a
//! facade user.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, io};

/// The re-exported crates whose doc examples are a facade user's.
const CRATES: &[&str] = &["pool", "tx", "tasks", "wire"];

fn main() -> io::Result<()> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    let mut out = String::from("Doc-comment examples of the re-exported crates.\n");
    for name in CRATES {
        let src = root.join("crates").join(name).join("src");
        println!("cargo:rerun-if-changed={}", src.display());
        let mut files = Vec::new();
        rust_files(&src, &mut files)?;
        files.sort();
        for file in files {
            let text = fs::read_to_string(&file)?;
            let shown = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
            for (line, block) in examples(&text) {
                let _ = write!(out, "\n`{shown}` line {line}:\n\n{block}");
            }
        }
    }
    let path = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("doc-examples.md");
    fs::write(path, out)
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
    Ok(())
}

/// The fenced blocks of a file's `///` and `//!` comments, with the line each starts on.
fn examples(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(doc) = trimmed
            .strip_prefix("///")
            .or_else(|| trimmed.strip_prefix("//!"))
        else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        let fence = doc.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => open = Some((n + 1, format!("{doc}\n"))),
            (Some((_, block)), true) => {
                block.push_str("```\n");
                found.extend(open.take());
            }
            (Some((_, block)), false) => {
                block.push_str(doc);
                block.push('\n');
            }
            (None, false) => {}
        }
    }
    found
}
