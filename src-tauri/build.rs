use std::path::Path;

fn main() {
    // tauri embeds ../ui/dist at compile time and refuses to build without it. A fresh clone has no
    // built UI (npm builds it; see scripts/test.d/50-app.sh), so `cargo test --workspace` gets a
    // placeholder page saying how to build the real one. The real build replaces it.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dist = Path::new(&manifest_dir).join("../ui/dist");
    if !dist.join("index.html").exists() {
        let _ = std::fs::create_dir_all(&dist);
        let _ = std::fs::write(
            dist.join("index.html"),
            "<!doctype html><title>Hum</title><p>The UI is not built. Run <code>npm --prefix ui ci &amp;&amp; npm --prefix ui run build</code>, then rebuild the app.</p>\n",
        );
    }
    println!("cargo:rerun-if-changed=../ui/dist");
    tauri_build::build()
}
