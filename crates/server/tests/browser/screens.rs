//! Screenshots of each screen, as the tests' browser saw them: always written to
//! `target/screens/`, and also to the folder `ESTATE_CRM_SCREENSHOTS` names (relative to the
//! workspace root), which is how `docs/screens/` is refreshed:
//! `ESTATE_CRM_SCREENSHOTS=docs/screens cargo test -p estate-crm --test browser`.

use std::path::{Path, PathBuf};

/// The workspace's root (two levels above this package).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target directory this test binary was built into (`target/debug/deps/browser-...`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors().nth(3).map(Path::to_owned).unwrap_or_else(|| workspace_root().join("target"))
}

/// Writes `png` as `NAME.png` into each screenshot folder.
pub fn save(name: &str, png: &[u8]) {
    let mut folders = vec![target_dir().join("screens")];
    if let Some(extra) = std::env::var_os("ESTATE_CRM_SCREENSHOTS").filter(|dir| !dir.is_empty()) {
        folders.push(workspace_root().join(extra));
    }
    for folder in folders {
        std::fs::create_dir_all(&folder).unwrap_or_else(|err| panic!("creating {}: {err}", folder.display()));
        let path = folder.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
    }
}
