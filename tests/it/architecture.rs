//! The dependency arrows of DESIGN.md: transport/http -> chat -> store, hub.

use std::path::Path;

/// Every `.rs` file under `src/<dir>`, subfolders included (or the one file `src/<dir>`).
fn sources(dir: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, files: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    let mut files = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    if root.is_file() {
        files.push((
            root.display().to_string(),
            std::fs::read_to_string(&root).unwrap(),
        ));
    } else {
        walk(&root, &mut files);
    }
    assert!(!files.is_empty(), "no sources in {dir}");
    files
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let rules = [
        (
            "chat",
            ["actix", "crate::transport", "crate::http"].as_slice(),
        ),
        (
            "store",
            [
                "actix",
                "crate::chat",
                "crate::hub",
                "crate::transport",
                "crate::http",
            ]
            .as_slice(),
        ),
        (
            "hub",
            [
                "actix",
                "crate::chat",
                "crate::store",
                "crate::transport",
                "crate::http",
            ]
            .as_slice(),
        ),
        (
            "notify",
            ["actix", "crate::transport", "crate::http"].as_slice(),
        ),
        (
            "auth",
            [
                "actix",
                "crate::store",
                "crate::hub",
                "crate::transport",
                "crate::http",
            ]
            .as_slice(),
        ),
        ("transport", ["crate::http"].as_slice()),
        // Where the server may call out to: below the domain and notifications alike.
        (
            "egress.rs",
            [
                "actix",
                "crate::chat",
                "crate::notify",
                "crate::store",
                "crate::hub",
                "crate::transport",
                "crate::http",
            ]
            .as_slice(),
        ),
    ];
    for (dir, forbidden) in rules {
        for (path, text) in sources(dir) {
            for needle in forbidden {
                assert!(
                    !text.contains(needle),
                    "{path} uses {needle}: that arrow points the wrong way"
                );
            }
        }
    }
    // The codecs are pure; only session/ owns a socket.
    for codec in ["phoenix.rs", "mod.rs"] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/transport")
                .join(codec),
        )
        .unwrap();
        assert!(
            !text.contains("actix"),
            "transport/{codec} must stay a pure codec"
        );
    }
}
