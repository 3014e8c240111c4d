//! Builds the guest crates under `plugins/` for `wasm32-wasip2` and leaves the components in
//! `$OUT_DIR/plugins/`: the built-in defaults are embedded in the binary from there, and the
//! example and test fixtures are found there by tests (`TANDEM_GUEST_DIR`).
//!
//! The guests build in their own target folder (`target/wasm-guests`), shared by every host
//! profile, so `cargo build`, `cargo test` and `cargo clippy` reuse one guest build.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (package, output file name) of the guests built without features.
const GUESTS: &[(&str, &str)] = &[
    ("tandem-plugin-whitelist", "whitelist.wasm"),
    ("tandem-plugin-path-filter", "path-filter.wasm"),
    ("tandem-plugin-purge-policy", "purge-policy.wasm"),
    ("tandem-plugin-example-skip-bak", "example-skip-bak.wasm"),
    ("tandem-fixture-future-major", "fixture-future-major.wasm"),
    ("tandem-fixture-not-a-policy", "fixture-not-a-policy.wasm"),
    ("tandem-fixture-hostile", "fixture-hostile-late.wasm"),
];

/// The hostile fixture is built once per misbehaviour (a cargo feature) into
/// `fixture-hostile-<feature>.wasm`.
const HOSTILE: &str = "tandem-fixture-hostile";
const HOSTILE_FEATURES: &[&str] = &["loop", "alloc", "trap", "short", "snoop", "sleep", "chatty", "busy"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", workspace.join("plugins").display());
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());

    let guest_target = guest_target_dir(&out_dir);
    let dest = out_dir.join("plugins");
    fs::create_dir_all(&dest).unwrap();

    // One cargo run for all featureless guests, then one per hostile feature.
    let packages: Vec<&str> = GUESTS.iter().map(|g| g.0).collect();
    cargo_build(&workspace, &guest_target, &packages, "");
    for (package, file) in GUESTS {
        copy_output(&guest_target, package, &dest.join(file));
    }
    for feature in HOSTILE_FEATURES {
        cargo_build(&workspace, &guest_target, &[HOSTILE], feature);
        copy_output(&guest_target, HOSTILE, &dest.join(format!("fixture-hostile-{feature}.wasm")));
    }
    println!("cargo:rustc-env=TANDEM_GUEST_DIR={}", dest.display());
}

/// `<workspace target>/wasm-guests`, found from OUT_DIR (`<target>/<profile>/build/<pkg>/out`).
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .filter(|t| t.join("CACHEDIR.TAG").exists())
        .map(|t| t.join("wasm-guests"))
        .unwrap_or_else(|| out_dir.join("wasm-guests"))
}

fn cargo_build(workspace: &Path, target_dir: &Path, packages: &[&str], features: &str) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    // Small components: no DWARF (the name section stays, so traps still name functions).
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false").env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the wasm guests");
    assert!(
        status.success(),
        "building the wasm guests failed; is the target installed? `rustup target add {TARGET}`"
    );
}

fn copy_output(target_dir: &Path, package: &str, dest: &Path) {
    let built = target_dir.join(TARGET).join("release");
    // A library's artifact is named with underscores, a binary's keeps its dashes.
    let lib = built.join(format!("{}.wasm", package.replace('-', "_")));
    let artifact = if lib.exists() { lib } else { built.join(format!("{package}.wasm")) };
    fs::copy(&artifact, dest).unwrap_or_else(|e| panic!("copying {}: {e}", artifact.display()));
}
