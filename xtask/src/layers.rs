//! `cargo xtask layers`: the rules of ARCHITECTURE.md ("Invariants of the code") as missing
//! dependency edges, checked on the real dependency graph (`cargo tree`), and no circle
//! between the modules of any crate of ours (read from `crate::`/`super::` paths).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Our crates, bottom layer first.
const CRATES: &[&str] = &["history", "input", "mail", "disk", "devices", "stack", "check", "sim", "mailchaos"];

/// (crate, what it must never reach, why). Reaching means any path in the normal (non-dev)
/// dependency graph, not only a direct edge.
const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    ("history", &["input", "mail", "disk", "devices", "stack", "check", "sim", "mailchaos"], "the history is what every layer speaks; it knows none of them"),
    ("input", &["history", "mail", "disk", "devices", "stack", "check", "sim", "mailchaos"], "input errors are common ground below scenarios and profiles"),
    ("mail", &["history", "input", "disk", "devices", "stack", "check", "sim", "mailchaos"], "mail formats and policies are data, with no behaviour of the stack"),
    ("disk", &["devices", "stack", "check", "sim", "mailchaos", "turmoil"], "the Disk trait must not know the devices behind it"),
    ("stack", &["turmoil", "devices", "input", "check", "sim", "mailchaos"], "the stack knows nothing of faults, the simulator, the scenario or its judges"),
    ("devices", &["turmoil", "stack", "check", "sim", "mailchaos"], "devices serve any stack and know no simulator"),
    ("check", &["stack", "disk", "devices", "sim", "input", "turmoil", "mailchaos"], "checkers read histories and final images only"),
    ("sim", &["mailchaos"], "the CLI sits on top"),
];

pub fn check() -> Result<bool, String> {
    let mut clean = true;
    for (krate, forbidden, why) in FORBIDDEN {
        let reached = reachable(krate)?;
        for name in forbidden.iter().filter(|name| reached.contains(**name)) {
            println!("layers: {krate} reaches {name}: forbidden ({why})");
            clean = false;
        }
    }
    for krate in CRATES {
        let source = Path::new("harness").join(krate).join("src");
        if let Some(circle) = module_circle(&source)? {
            println!("layers: modules of {krate} depend on each other in a circle: {}", circle.join(" -> "));
            clean = false;
        }
    }
    println!("layers: {} crates, {}", CRATES.len(), if clean { "no forbidden edge, no module circle" } else { "VIOLATED" });
    Ok(clean)
}

/// Every package the crate reaches through normal dependencies.
fn reachable(krate: &str) -> Result<BTreeSet<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--quiet", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .map_err(|error| format!("cannot run cargo tree: {error}"))?;
    if !output.status.success() {
        return Err(format!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // The first line is the crate itself.
    Ok(text.lines().skip(1).filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect())
}

/// A circle among the top-level modules of a crate, if any. A module is a file (or a folder
/// with its children, which count as one module); it uses a sibling when it names
/// `crate::<sibling>` or, in a top-level file, `super::<sibling>`.
fn module_circle(source: &Path) -> Result<Option<Vec<String>>, String> {
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    collect(source, None, &mut texts)?;
    let modules: BTreeSet<String> = texts.keys().filter(|name| name.as_str() != "lib" && name.as_str() != "main").cloned().collect();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &texts {
        let used = uses.entry(module.clone()).or_default();
        for line in text.lines().map(str::trim).filter(|line| !line.starts_with("//")) {
            for prefix in ["crate::", "super::"] {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if modules.contains(&name) && &name != module {
                        used.insert(name);
                    }
                    // `use crate::{a, b}` names several.
                    if rest.starts_with('{') {
                        for part in rest[1..].split(['}', ';']).next().unwrap_or("").split(',') {
                            let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                            if modules.contains(&name) && &name != module {
                                used.insert(name);
                            }
                        }
                    }
                }
            }
        }
    }
    for start in &modules {
        if let Some(path) = path_back(start, start, &uses, &mut BTreeSet::new()) {
            let mut circle = vec![start.clone()];
            circle.extend(path);
            return Ok(Some(circle));
        }
    }
    Ok(None)
}

/// A path of uses from `from` back to `target`, depth-first.
fn path_back(target: &str, from: &str, uses: &BTreeMap<String, BTreeSet<String>>, seen: &mut BTreeSet<String>) -> Option<Vec<String>> {
    for next in uses.get(from).into_iter().flatten() {
        if next == target {
            return Some(vec![next.clone()]);
        }
        if seen.insert(next.clone()) {
            if let Some(mut rest) = path_back(target, next, uses, seen) {
                rest.insert(0, next.clone());
                return Some(rest);
            }
        }
    }
    None
}

/// The text of each top-level module: a file, or a folder's files together.
fn collect(dir: &Path, module: Option<&str>, texts: &mut BTreeMap<String, String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut paths: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
    paths.sort();
    for path in paths {
        let stem = path.file_stem().map(|stem| stem.to_string_lossy().to_string()).unwrap_or_default();
        let name = module.map(str::to_string).unwrap_or_else(|| stem.clone());
        if path.is_dir() {
            collect(&path, Some(&name), texts)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            texts.entry(name).or_default().push_str(&text);
        }
    }
    Ok(())
}
