//! Herald's modules form layers: a module uses only modules of its own
//! layer or below, and no chain of uses comes back to where it started.
//! This reads every `crate::` path in `src/` (test code aside, which may
//! put together whatever it tests) and checks both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A new top-level module takes its place here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation: the wire protocol, config, metrics and their labels, identifiers, \
         the delivery types, the actor idiom",
        &["protocol", "config", "metrics", "ids", "delivery", "supervisor", "rpc", "auth", "memory", "logging"],
    ),
    ("cluster engines: codec, backplane, relay, directory, membership", &["cluster"]),
    ("the node's actors", &["presence", "rooms"]),
    ("connections, and the cluster link", &["connection", "link"]),
    ("what transports and the server share of a node", &["node"]),
    ("transports and the server API", &["transport", "api"]),
    ("the composition root", &["server"]),
];

/// The top-level module each `crate::` path in `src/` names, by using module
/// and the files where it does.
fn uses() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if rel == "lib.rs" || rel == "main.rs" || rel.ends_with("/tests.rs") {
            continue;
        }
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for used in referenced_modules(code) {
            if used != module {
                graph.entry(module.clone()).or_default().entry(used).or_default().insert(rel.clone());
            }
        }
        graph.entry(module).or_default();
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The first segment of every `crate::` path in `code`, comments aside,
/// including each branch of `use crate::{a::x, b::{y, z}}`.
fn referenced_modules(code: &str) -> BTreeSet<String> {
    let code: String = code.lines().map(|line| line.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = closing_brace(group);
            for branch in top_level_items(&group[..end]) {
                found.insert(identifier(branch.trim()));
            }
            rest = &group[end..];
        } else {
            found.insert(identifier(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    found
}

fn identifier(text: &str) -> String {
    text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// Where the group opened just before `text` closes.
fn closing_brace(text: &str) -> usize {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The comma-separated items of a group, nested groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

#[test]
fn the_reader_finds_paths_in_groups_and_not_in_comments() {
    let code = "use crate::a::X;\nuse crate::{b::{self, Y}, c::Z, self};\n// crate::commented\nlet v = crate::d::f();";
    let found: Vec<String> = referenced_modules(code).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "self"]);
}

#[test]
fn every_module_has_a_layer_and_uses_only_its_own_or_lower() {
    let graph = uses();
    assert!(
        graph.get("server").is_some_and(|used| used.contains_key("transport")),
        "the reader sees the server use the transports: {graph:?}"
    );
    let mut wrong = Vec::new();
    for (module, used) in &graph {
        let Some(layer) = layer_of(module) else {
            wrong.push(format!("src/{module} has no layer: add it to LAYERS in tests/it/layers.rs"));
            continue;
        };
        for (target, files) in used {
            match layer_of(target) {
                Some(below) if below <= layer => {}
                Some(above) => wrong.push(format!(
                    "{module} ({}) uses {target} ({}) above it, in {files:?}",
                    LAYERS[layer].0, LAYERS[above].0
                )),
                None => wrong.push(format!("{module} uses {target}, which has no layer, in {files:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_chain_of_uses_comes_back_to_where_it_started() {
    let graph = uses();
    // Depth-first, remembering the path: an edge back into it is a cycle.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| m.to_string()).collect();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for target in graph.get(module).into_iter().flat_map(|used| used.keys()) {
            if let Some(cycle) = visit(target, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("modules use each other in a circle: {}", cycle.join(" -> "));
        }
    }
}
