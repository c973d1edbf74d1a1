//! Builds every guest fixture (`fixtures/src/bin/*.rs`) to a `wasm32-wasip2` component and
//! generates `fixtures.rs`: one path constant per fixture and `foreach_fixture!`, which the
//! conformance tests use to prove that every fixture has a test.

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    for watched in [
        "fixtures/src",
        "fixtures/Cargo.toml",
        "fixtures/wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // A separate target directory: the outer cargo holds the lock on the main one.
    let target_dir = root.join("target").join("fixtures");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--package", "alga-storage-fixtures"])
        .args(["--target", "wasm32-wasip2", "--bins", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        // `cargo clippy` sets a wrapper for the outer build; the fixtures are linted on their own.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        // Guests are built without debug info, and otherwise as an extension's author builds
        // them, with cargo's release defaults: the workspace's whole-program optimisation is the
        // host's.
        .args(["--config", "profile.release.debug=false"])
        .args(["--config", "profile.release.lto=false"])
        .args(["--config", "profile.release.codegen-units=16"])
        .status()
        .expect("cannot run cargo to build the fixtures");
    assert!(
        status.success(),
        "building the guest fixtures failed (is the wasm32-wasip2 target installed? \
         `rustup target add wasm32-wasip2`)"
    );

    let mut names: Vec<String> = std::fs::read_dir(root.join("fixtures/src/bin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut generated = String::new();
    for name in &names {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "fixture {name} was not built at {}",
            path.display()
        );
        writeln!(
            generated,
            "/// The `{name}` guest fixture component.\npub const {}: &str = {:?};",
            name.to_uppercase(),
            path.display().to_string()
        )
        .unwrap();
    }
    generated.push_str(
        "/// Calls `$mac!(name)` for every fixture.\n#[macro_export]\nmacro_rules! foreach_fixture {\n    ($mac:ident) => {\n",
    );
    for name in &names {
        writeln!(generated, "        $mac!({name});").unwrap();
    }
    generated.push_str("    };\n}\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("fixtures.rs");
    std::fs::write(out, generated).unwrap();
}
