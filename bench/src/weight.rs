//! The WASM weight report: raw, gzip and brotli bytes of each bundle (`.wasm` + JS glue) and of the whole page,
//! checked against the budgets in `bench/wasm-budget.json`. Compression levels match what the server serves
//! (gzip best, brotli 11), so the numbers are what a browser downloads.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use cartwheel_core::page::BUNDLES;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    pub raw: usize,
    pub gzip: usize,
    pub brotli: usize,
}

impl std::ops::AddAssign for Weight {
    fn add_assign(&mut self, o: Weight) {
        self.raw += o.raw;
        self.gzip += o.gzip;
        self.brotli += o.brotli;
    }
}

pub fn weigh(bytes: &[u8]) -> Weight {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gz.write_all(bytes);
    let gzip = gz.finish().map(|v| v.len()).unwrap_or(0);
    let mut br = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
    let _ = brotli::BrotliCompress(&mut &bytes[..], &mut br, &params);
    Weight { raw: bytes.len(), gzip, brotli: br.len() }
}

/// Weigh every bundle under `site_dir`; print the table; check the budgets. Returns the failures, in words.
pub fn report(site_dir: &Path, budget_file: &Path) -> Result<Vec<String>, String> {
    let budget: Value = serde_json::from_str(
        &std::fs::read_to_string(budget_file).map_err(|e| format!("{}: {e}", budget_file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", budget_file.display()))?;
    let bundle_budget = budget["bundle_gzip_bytes"].as_u64().ok_or("budget: bundle_gzip_bytes missing")? as usize;
    let page_budget = budget["page_gzip_bytes"].as_u64().ok_or("budget: page_gzip_bytes missing")? as usize;

    let mut failures = Vec::new();
    let mut page = Weight::default();
    println!("{:<15} {:>10} {:>10} {:>10}   (bytes: .wasm + .js)", "bundle", "raw", "gzip", "brotli");
    for (dir, output) in BUNDLES {
        let pkg = site_dir.join(dir).join("pkg");
        let mut bundle = Weight::default();
        for ext in ["wasm", "js"] {
            let path = pkg.join(format!("{output}.{ext}"));
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("{}: {e} (run `cargo leptos build --release`)", path.display()))?;
            bundle += weigh(&bytes);
        }
        println!("{dir:<15} {:>10} {:>10} {:>10}", bundle.raw, bundle.gzip, bundle.brotli);
        if bundle.gzip > bundle_budget {
            failures.push(format!("bundle {dir} is {} bytes gzip, over its budget of {bundle_budget}", bundle.gzip));
        }
        page += bundle;
    }
    println!("{:<15} {:>10} {:>10} {:>10}", "page", page.raw, page.gzip, page.brotli);
    if page.gzip > page_budget {
        failures.push(format!("the page's bundles are {} bytes gzip, over the budget of {page_budget}", page.gzip));
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_sizes_are_smaller_for_repetitive_input() {
        let w = weigh(&b"cartwheel ".repeat(1000));
        assert_eq!(w.raw, 10_000);
        assert!(w.gzip < 200 && w.brotli < 200, "{w:?}");
    }

    #[test]
    fn over_budget_names_the_bundle_and_the_numbers() {
        let dir = std::env::temp_dir().join(format!("cartwheel-weight-{}", std::process::id()));
        for (d, o) in BUNDLES {
            let pkg = dir.join(d).join("pkg");
            std::fs::create_dir_all(&pkg).unwrap();
            // Incompressible bytes for product-list, tiny files for the others.
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let big: Vec<u8> = (0..4000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 56) as u8
                })
                .collect();
            std::fs::write(pkg.join(format!("{o}.wasm")), if d == "product-list" { big } else { b"\0asm".to_vec() })
                .unwrap();
            std::fs::write(pkg.join(format!("{o}.js")), b"export {}").unwrap();
        }
        let budget = dir.join("budget.json");
        std::fs::write(&budget, r#"{"bundle_gzip_bytes": 1000, "page_gzip_bytes": 100000}"#).unwrap();
        let failures = report(&dir, &budget).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("bundle product-list is ") && failures[0].contains("budget of 1000"),
            "{}",
            failures[0]
        );
    }
}
