//! The house rule on module dependencies, checked over every crate of the workspace: no import
//! loops between modules (a module that uses another is never used back, directly or through
//! others), and the operator's gRPC layer never reaches into the controllers.
//!
//! A module depends on another when its code names an item there (`use crate::a::b`,
//! `super::x`, `crate::a::f()` in an expression, a module alias). Declaring a child (`mod x;`) and
//! re-exporting (`pub use`, a facade: a path through it counts as the item's own module) are not
//! dependencies; test modules (`#[cfg(test)] mod tests { .. }`) are left out. The check reads
//! the source text, so it needs no build and sees exactly what a reader sees.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// One module: its path in the crate (empty for the root) and its source with comments, string
/// and char literals and inline test modules removed.
struct Module {
    path: Vec<String>,
    code: String,
}

#[test]
fn no_module_of_any_crate_is_in_an_import_loop() {
    let mut report = Vec::new();
    for root in crate_roots() {
        let modules = modules_of(&root);
        let graph = dependencies(&modules);
        // `MODULE_GRAPH=1 cargo test --test module_layers -- --nocapture` prints every crate's.
        if std::env::var_os("MODULE_GRAPH").is_some() {
            println!("{}", root.strip_prefix(workspace()).unwrap().display());
            for (from, to) in &graph {
                let to: Vec<&str> = to
                    .iter()
                    .map(|m| if m.is_empty() { "(root)" } else { m })
                    .collect();
                println!(
                    "  {} → {}",
                    if from.is_empty() { "(root)" } else { from },
                    to.join(", ")
                );
            }
        }
        for (cycle, knot) in cycles(&graph) {
            let knot: Vec<String> = knot
                .into_iter()
                .map(|m| if m.is_empty() { "(root)".into() } else { m })
                .collect();
            report.push(format!(
                "{}: {} → back; all {} modules that reach each other: {}",
                root.strip_prefix(workspace()).unwrap().display(),
                cycle.join(" → "),
                knot.len(),
                knot.join(", ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "import loops (each module in a loop uses the next, the last uses the first); give the \
         shared items a home below all of them:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_grpc_layer_never_uses_the_controllers() {
    let root = workspace().join("operator/src/lib.rs");
    let modules = modules_of(&root);
    let graph = dependencies(&modules);
    let mut offending = Vec::new();
    for (from, targets) in &graph {
        if !from.starts_with("grpc") {
            continue;
        }
        for to in targets.iter().filter(|to| to.starts_with("controller")) {
            offending.push(format!("{from} uses {to}"));
        }
    }
    assert!(
        offending.is_empty(),
        "grpc::* may use the context and the domain modules, never controller::*:\n{}",
        offending.join("\n")
    );
}

/// The checker itself: a loop through `super::`, a module alias and an expression path is found,
/// and a parent that only declares its children is not one.
#[test]
fn the_checker_finds_a_loop_through_super_aliases_and_expressions() {
    let dir = std::env::temp_dir().join(format!("module-layers-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write("lib.rs", "pub mod a;\npub mod b;\n// crate::b::X in a comment\n");
    write("a/mod.rs", "pub mod c;\npub struct Shared;\n");
    write("a/c.rs", "use super::Shared;\nfn f() -> Shared { Shared }\n");
    write(
        "b.rs",
        "use crate::a::{self, Shared};\npub fn g() { let _ = \"crate::a::c\"; }\n#[cfg(test)]\nmod tests { use crate::a::c; }\n",
    );
    let graph = dependencies(&modules_of(&dir.join("lib.rs")));
    assert!(cycles(&graph).is_empty(), "{graph:?}");
    assert_eq!(graph["b"], BTreeSet::from(["a".to_string()]), "{graph:?}");

    // a uses b::g in an expression, b reaches a::c through the alias `a`, c uses a: a loop.
    write(
        "a/mod.rs",
        "pub mod c;\npub struct Shared;\nfn h() { crate::b::g() }\n",
    );
    write("b.rs", "use crate::a;\npub fn g() { a::c::f(); }\n");
    let found = cycles(&dependencies(&modules_of(&dir.join("lib.rs"))));
    std::fs::remove_dir_all(&dir).unwrap();
    let loops: Vec<Vec<String>> = found.into_iter().map(|(cycle, _)| cycle).collect();
    assert_eq!(loops, vec![vec!["a".to_string(), "b".into(), "a::c".into()]]);
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every crate root of the workspace: each member's `src/lib.rs`, `src/main.rs` and
/// `src/bin/*.rs`.
fn crate_roots() -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("the workspace lists its members");
    let mut roots = Vec::new();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let src = workspace().join(member).join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                roots.push(src.join(root));
            }
        }
        if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
            let mut bins: Vec<PathBuf> = bins.map(|entry| entry.unwrap().path()).collect();
            bins.sort();
            roots.extend(
                bins.into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "rs")),
            );
        }
    }
    assert!(roots.len() >= 9, "found only {roots:?}");
    roots
}

/// The modules of the crate rooted at `root`, following `mod name;` declarations.
fn modules_of(root: &Path) -> Vec<Module> {
    let mut modules = Vec::new();
    let mut pending = vec![(Vec::new(), root.to_path_buf())];
    while let Some((path, file)) = pending.pop() {
        let code =
            strip(&std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
        // Children live beside a crate root or `mod.rs`, else in a folder named after the file.
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => file.parent().unwrap().to_path_buf(),
            _ if path.is_empty() => file.parent().unwrap().to_path_buf(),
            _ => file.with_extension(""),
        };
        for child in declared_children(&code) {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let child_file = if flat.exists() { flat } else { nested };
            let mut child_path = path.clone();
            child_path.push(child);
            pending.push((child_path, child_file));
        }
        modules.push(Module { path, code });
    }
    modules
}

/// Names of `mod name;` declarations (not inline modules).
fn declared_children(code: &str) -> Vec<String> {
    let tokens = tokens(code);
    let mut children = Vec::new();
    for window in tokens.windows(3) {
        if window[0] == "mod" && window[2] == ";" {
            children.push(window[1].clone());
        }
    }
    children
}

/// `code` with comments, string and char literals and `#[cfg(test)] mod … { … }` blocks removed.
fn strip(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < chars.len() {
        let at = |k: usize| chars.get(k).copied();
        match chars[i] {
            '/' if at(i + 1) == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == Some('/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            'r' if (at(i + 1) == Some('"') || at(i + 1) == Some('#'))
                && !chars[..i]
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_') =>
            {
                // A raw string r"…" or r#"…"#.
                let mut hashes = 0;
                let mut j = i + 1;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' if at(i + 1) == Some('\\') => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            '\'' if at(i + 2) == Some('\'') => {
                i += 3;
                out.push_str("' '");
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    drop_test_modules(&out)
}

/// Removes `#[cfg(test)]` followed by an inline `mod name { … }`.
fn drop_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        // Any visibility: `pub`, `pub(crate)`, `pub(super)`, ….
        let trimmed = match trimmed.strip_prefix("pub") {
            Some(rest) if rest.starts_with('(') => rest.split_once(')').map_or(rest, |(_, r)| r),
            Some(rest) => rest,
            None => trimmed,
        }
        .trim_start();
        let is_inline_mod = trimmed.starts_with("mod ")
            && trimmed
                .find(['{', ';'])
                .is_some_and(|p| trimmed.as_bytes()[p] == b'{');
        if !is_inline_mod {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let open = after.find('{').unwrap();
        let mut depth = 0;
        let mut end = after.len();
        for (k, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            tokens.push(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .trim_start_matches('$')
                    .to_string(),
            );
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// A path as written, resolved against the module it is written in: the module path it names,
/// or `None` when it does not start in this crate.
fn absolute(
    segments: &[String],
    here: &[String],
    aliases: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let (first, rest) = segments.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        other => aliases.get(other)?.clone(),
    };
    let mut rest = rest;
    while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
        base.pop();
        rest = tail;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The paths a `use` tree names (`a::{b, c::{self, d}}` → `a::b`, `a::c`, `a::c::d`), each with
/// the local name it binds.
fn use_paths(tokens: &[String]) -> Vec<(Vec<String>, Option<String>)> {
    fn walk(
        tokens: &[String],
        i: &mut usize,
        prefix: Vec<String>,
        out: &mut Vec<(Vec<String>, Option<String>)>,
    ) {
        let mut path = prefix.clone();
        while *i < tokens.len() {
            let token = tokens[*i].as_str();
            match token {
                "{" => {
                    *i += 1;
                    loop {
                        walk(tokens, i, path.clone(), out);
                        match tokens.get(*i).map(String::as_str) {
                            Some(",") => *i += 1,
                            Some("}") => {
                                *i += 1;
                                break;
                            }
                            _ => break,
                        }
                        if tokens.get(*i).map(String::as_str) == Some("}") {
                            *i += 1;
                            break;
                        }
                    }
                    return;
                }
                "::" => *i += 1,
                "," | "}" | ";" => break,
                "as" => {
                    let alias = tokens.get(*i + 1).cloned();
                    *i += 2;
                    out.push((path, alias));
                    return;
                }
                "*" => {
                    *i += 1;
                    out.push((path, None));
                    return;
                }
                "self" if path.len() > prefix.len() || !prefix.is_empty() => {
                    *i += 1;
                    let name = path.last().cloned();
                    out.push((path, name));
                    return;
                }
                _ => {
                    path.push(token.to_string());
                    *i += 1;
                }
            }
        }
        if path.len() > prefix.len() {
            let name = path.last().cloned();
            out.push((path, name));
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    walk(tokens, &mut i, Vec::new(), &mut out);
    out
}

/// Module → the modules whose items it names. A name re-exported with `pub use` counts as the
/// module that defines it.
fn dependencies(modules: &[Module]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    // What each module names, and what it re-exports (local name → absolute path).
    let mut named: BTreeMap<Vec<String>, Vec<Vec<String>>> = BTreeMap::new();
    let mut reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for module in modules {
        let tokens = tokens(&module.code);
        let mut paths = Vec::new();
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Children are reachable by their bare names.
        for child in known
            .iter()
            .filter(|p| p.len() == module.path.len() + 1 && p.starts_with(&module.path))
        {
            aliases.insert(child.last().unwrap().clone(), child.clone());
        }
        // `use` declarations, which the scan of paths below skips.
        let mut in_use = vec![false; tokens.len()];
        let mut i = 0;
        while i < tokens.len() {
            if tokens[i] != "use" {
                i += 1;
                continue;
            }
            let public = i > 0 && (tokens[i - 1] == "pub" || tokens[i - 1] == ")");
            let end = tokens[i..]
                .iter()
                .position(|t| t == ";")
                .map_or(tokens.len(), |p| i + p);
            in_use[i..end].iter_mut().for_each(|t| *t = true);
            for (path, local) in use_paths(&tokens[i + 1..end]) {
                let Some(absolute) = absolute(&path, &module.path, &aliases) else {
                    continue;
                };
                // A re-export is a facade, not a use: a path through it counts as its source.
                if public {
                    if let Some(local) = local {
                        reexports
                            .entry(module.path.clone())
                            .or_default()
                            .insert(local, absolute);
                    }
                    continue;
                }
                match local {
                    // `use crate::a::b;` of a module only binds a name; the paths through it are
                    // the dependencies.
                    Some(local) if known.contains(&absolute) => {
                        aliases.insert(local, absolute);
                    }
                    _ => paths.push(absolute),
                }
            }
            i = end;
        }
        // Paths in the code: `crate::…`, `super::…`, `self::…`, `alias::…`.
        let mut i = 0;
        while i < tokens.len() {
            let starts = !in_use[i]
                && tokens.get(i + 1).is_some_and(|t| t == "::")
                && (i == 0 || tokens[i - 1] != "::")
                && (matches!(tokens[i].as_str(), "crate" | "super" | "self")
                    || aliases.contains_key(&tokens[i]));
            if !starts {
                i += 1;
                continue;
            }
            let mut path = vec![tokens[i].clone()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|t| t == "::")
                && tokens
                    .get(j + 1)
                    .is_some_and(|t| t.chars().all(|c| c.is_alphanumeric() || c == '_'))
            {
                path.push(tokens[j + 1].clone());
                j += 2;
            }
            if let Some(absolute) = absolute(&path, &module.path, &aliases) {
                paths.push(absolute);
            }
            i = j;
        }
        named.insert(module.path.clone(), paths);
    }
    // The module a path reaches: the deepest module on it, followed through re-exports.
    let target = |path: &[String]| -> Option<Vec<String>> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let module = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| known.contains(p))?;
            let Some(source) = path
                .get(module.len())
                .and_then(|name| reexports.get(&module)?.get(name))
                .filter(|source| **source != path[..=module.len()])
            else {
                return Some(module);
            };
            let rest = path[module.len() + 1..].to_vec();
            path = source.iter().cloned().chain(rest).collect();
        }
        None
    };
    let mut graph = BTreeMap::new();
    for (from, paths) in named {
        let edges: &mut BTreeSet<String> = graph.entry(from.join("::")).or_default();
        for path in paths {
            if let Some(to) = target(&path).filter(|to| *to != from) {
                edges.insert(to.join("::"));
            }
        }
    }
    graph
}

/// One loop per strongly connected component of more than one module: the shortest path from
/// its first module back to it, and the component.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<(Vec<String>, BTreeSet<String>)> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for start in graph.keys() {
        if done.contains(start) || !reachable[start].contains(start) {
            continue;
        }
        let component: BTreeSet<String> = reachable[start]
            .iter()
            .filter(|n| reachable.get(n).is_some_and(|r| r.contains(start)))
            .cloned()
            .collect();
        // Breadth-first inside the component, back to `start`.
        let mut parents: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut last = None;
        'search: while let Some(node) = queue.pop_front() {
            for next in graph[&node].iter().filter(|n| component.contains(*n)) {
                if next == start {
                    last = Some(node.clone());
                    break 'search;
                }
                if !parents.contains_key(next) {
                    parents.insert(next.clone(), node.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        let mut node = last.expect("a module that reaches itself has a loop");
        let mut cycle = vec![node.clone()];
        while node != *start {
            node = parents[&node].clone();
            cycle.push(node.clone());
        }
        cycle.reverse();
        done.extend(component.iter().cloned());
        found.push((cycle, component));
    }
    found
}
