//! ARCHITECTURE.md held against the code: it names every file under `src/` (and nothing that is
//! not there), every port and adapter it lists exists and implements what it says, and each room
//! of the library imports only the rooms its row of the table allows.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Every `.rs` file under `dir`, as a path relative to `src/` (`domain/ids.rs`).
fn sources(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root().join("src")).unwrap();
            out.insert(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The lines of the first fenced block after `heading`.
fn block_after<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect()
}

/// The files the "Files" block names, as paths relative to `src/`: an entry's folder is the
/// nearest less indented line ending in `/`, and a folder names its `mod.rs`.
fn files_named(doc: &str) -> BTreeSet<String> {
    let mut folders: Vec<(usize, String)> = Vec::new();
    let mut named = BTreeSet::new();
    for line in block_after(doc, "## Files") {
        let indent = line.len() - line.trim_start().len();
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        folders.retain(|(i, _)| *i < indent);
        let prefix: String = folders.iter().skip(1).map(|(_, f)| f.as_str()).collect();
        if name.ends_with('/') {
            if !folders.is_empty() {
                // A folder's mod.rs is its map: named with the folder.
                named.insert(format!("{prefix}{name}mod.rs"));
            }
            folders.push((indent, name.to_string()));
        } else if name.ends_with(".rs") {
            named.insert(format!("{prefix}{name}"));
        }
    }
    named
}

#[test]
fn architecture_md_names_every_source_file_and_only_those() {
    let named = files_named(&architecture());
    let mut real = BTreeSet::new();
    sources(&root().join("src"), &mut real);
    let unnamed: Vec<_> = real.difference(&named).collect();
    let gone: Vec<_> = named.difference(&real).collect();
    assert!(
        unnamed.is_empty() && gone.is_empty(),
        "ARCHITECTURE.md's Files block is out of date: not named {unnamed:?}, named but absent {gone:?}"
    );
}

/// The rows of the table of rooms: each room (`domain`, `audit`) and the rooms it may import.
fn rooms(doc: &str) -> Vec<(Vec<String>, BTreeSet<String>)> {
    let start = doc
        .find("| room | may import |")
        .expect("the table of rooms");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(|s| s.trim_end_matches('/').trim_end_matches(".rs").to_string())
            .collect()
    };
    doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            (ticked(cells[1]), ticked(cells[2]).into_iter().collect())
        })
        .collect()
}

/// The top-level rooms `crate::ROOM` that a room's code (not its comments) imports.
fn imports_of(room: &str) -> BTreeSet<String> {
    let dir = root().join("src").join(room);
    let mut files = BTreeSet::new();
    if dir.is_dir() {
        sources(&dir, &mut files);
    } else {
        files.insert(format!("{room}.rs"));
    }
    let mut used = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(root().join("src").join(&file)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != room {
                    used.insert(name);
                }
            }
        }
    }
    used
}

#[test]
fn each_room_imports_only_what_the_table_of_rooms_allows() {
    let rows = rooms(&architecture());
    assert!(rows.len() >= 8, "the table of rooms was not read: {rows:?}");
    for (names, allowed) in rows {
        for room in names {
            let used = imports_of(&room);
            let extra: Vec<_> = used.difference(&allowed).collect();
            assert!(
                extra.is_empty(),
                "src/{room} imports {extra:?}, which ARCHITECTURE.md does not allow it"
            );
        }
    }
}

#[test]
fn the_domain_and_the_ports_name_no_aws_type_clock_environment_or_runtime() {
    for room in ["domain", "ports"] {
        let mut files = BTreeSet::new();
        sources(&root().join("src").join(room), &mut files);
        for file in files {
            let text = fs::read_to_string(root().join("src").join(&file)).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for banned in ["aws_", "tokio", "std::env", "SystemTime", "Instant::now"] {
                    assert!(
                        !line.contains(banned),
                        "src/{file}:{}: {banned} has no place in the {room}: {line}",
                        n + 1
                    );
                }
            }
        }
    }
}

#[test]
fn every_port_and_adapter_in_the_table_exists_and_implements_its_port() {
    let doc = architecture();
    let start = doc
        .find("| port | what it is for | adapters |")
        .expect("the ports table");
    let rows: Vec<&str> = doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(rows.len() >= 4, "{rows:?}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').collect();
        let port = cells[1].trim().trim_matches('`');
        let (module, name) = port.rsplit_once("::").unwrap();
        let file = root()
            .join("src")
            .join(module.replace("::", "/"))
            .with_extension("rs");
        let text = fs::read_to_string(&file).unwrap_or_else(|_| panic!("{port}: no {file:?}"));
        assert!(
            text.contains(&format!("pub trait {name}")),
            "{port} is not a trait in {file:?}"
        );
        for adapter in cells[3].split('`').skip(1).step_by(2) {
            let Some(("adapters", rest)) = adapter.split_once("::") else {
                continue;
            };
            let (module, ty) = rest.rsplit_once("::").unwrap();
            let file = root()
                .join("src/adapters")
                .join(module)
                .with_extension("rs");
            let mut text =
                fs::read_to_string(&file).unwrap_or_else(|_| panic!("{adapter}: no {file:?}"));
            // An adapter module may keep an impl in a child module (`ecr/inventory.rs`).
            let children = root().join("src/adapters").join(module);
            if children.is_dir() {
                let mut files = BTreeSet::new();
                sources(&children, &mut files);
                for child in files {
                    text.push_str(&fs::read_to_string(root().join("src").join(child)).unwrap());
                }
            }
            let implements = text.contains(&format!("impl {name} for {ty}"))
                || text.contains(&format!("> {name} for {ty}"));
            assert!(implements, "{adapter} does not implement {port}");
        }
    }
}
