//! docs/architecture.md stays true: its crate table (the fenced block marked `crates`) lists,
//! for every crate of the workspace, exactly the workspace crates it depends on, and
//! `cargo metadata` must agree. A new edge needs the document changed first, and a cycle
//! cannot be drawn without being noticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

type Edges = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("repo root")
}

/// `name -> a, b; dev: c, d` lines of the ```crates block.
fn documented() -> Edges {
    let text =
        std::fs::read_to_string(repo().join("docs/architecture.md")).expect("docs/architecture.md");
    let block = text
        .split("```crates\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/architecture.md has a ```crates block");
    let list = |s: &str| -> BTreeSet<String> {
        s.split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect()
    };
    let mut edges = Edges::new();
    for line in block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, deps) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("no `->` in {line:?}"));
        let (normal, dev) = deps.split_once("; dev:").unwrap_or((deps, ""));
        let prev = edges.insert(name.trim().to_string(), (list(normal), list(dev)));
        assert!(prev.is_none(), "{} is listed twice", name.trim());
    }
    edges
}

/// The same from `cargo metadata`: dependencies on other workspace members only.
fn actual() -> Edges {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str())
        .map(String::from)
        .collect();
    let mut edges = Edges::new();
    for p in packages {
        let name = p["name"].as_str().expect("name").to_string();
        let (mut normal, mut dev) = (BTreeSet::new(), BTreeSet::new());
        for d in p["dependencies"].as_array().expect("dependencies") {
            let dep = d["name"].as_str().expect("dependency name").to_string();
            if !members.contains(&dep) {
                continue;
            }
            match d["kind"].as_str() {
                Some("dev") => dev.insert(dep),
                _ => normal.insert(dep),
            };
        }
        // A dev-dependency that is also a normal one is drawn once, as normal.
        let dev = dev.difference(&normal).cloned().collect();
        edges.insert(name, (normal, dev));
    }
    edges
}

#[test]
fn crate_dependencies_are_the_documented_ones() {
    let (doc, real) = (documented(), actual());
    let mut wrong = Vec::new();
    for (name, (normal, dev)) in &real {
        match doc.get(name) {
            None => wrong.push(format!("{name} is not in the ```crates block")),
            Some((dn, dd)) => {
                for d in normal.difference(dn) {
                    wrong.push(format!(
                        "{name} depends on {d}, which the document does not say"
                    ));
                }
                for d in dn.difference(normal) {
                    wrong.push(format!(
                        "the document says {name} depends on {d}; it does not"
                    ));
                }
                for d in dev.difference(dd) {
                    wrong.push(format!(
                        "{name} has the dev-dependency {d}, which the document does not say"
                    ));
                }
                for d in dd.difference(dev) {
                    wrong.push(format!(
                        "the document says {name} has the dev-dependency {d}; it does not"
                    ));
                }
            }
        }
    }
    for name in doc.keys().filter(|n| !real.contains_key(*n)) {
        wrong.push(format!(
            "the document lists {name}, which is not a workspace crate"
        ));
    }
    assert!(
        wrong.is_empty(),
        "docs/architecture.md disagrees with Cargo.toml:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_crate_graph_has_no_cycle() {
    // Cargo refuses cycles between normal dependencies; this also holds the documented ones to it.
    let doc = documented();
    fn visit<'a>(
        n: &'a str,
        doc: &'a Edges,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(n) {
            return;
        }
        assert!(!path.contains(&n), "cycle: {} -> {n}", path.join(" -> "));
        path.push(n);
        if let Some((deps, _)) = doc.get(n) {
            for d in deps {
                visit(d, doc, path, done);
            }
        }
        path.pop();
        done.insert(n);
    }
    let mut done = BTreeSet::new();
    for n in doc.keys() {
        visit(n, &doc, &mut Vec::new(), &mut done);
    }
}
