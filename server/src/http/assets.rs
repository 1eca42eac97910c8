//! The browser bundles and the stylesheet, served under content-hashed names, precompressed.
//!
//! cargo-leptos writes each micro-frontend's JS glue and `.wasm` to its own site-root
//! (`target/site/<bundle>/pkg/`); the stylesheet lives in `style/`. At start-up every file is read once, named
//! `<stem>-<hash>.<ext>` after its content, and compressed with brotli and gzip, so a page can reference it
//! with a year-long `immutable` cache lifetime and a new build can never be mixed with a cached old one.
//! In development (`--watch-assets`) the set is rebuilt whenever a file changes on disk.
//!
//! A missing bundle is not an error: the page is still server-rendered (and works as a static shop front),
//! it just does not load that bundle. Tests run without any.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tower_http::services::ServeDir;

use super::error::AppError;
use crate::sync::{read, write};
use axum::extract::FromRef;

/// The hashed bundles and stylesheet under [`ASSETS_PATH`], and the product images from `images_dir`.
pub fn router<S>(images_dir: &Path) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Assets: FromRef<S>,
{
    Router::new()
        .route(&format!("{ASSETS_PATH}/{{file}}"), get(serve))
        .nest_service("/images", ServeDir::new(images_dir))
}

/// URL prefix of every asset.
pub const ASSETS_PATH: &str = "/assets";
/// Browsers may keep an asset this long: its name changes with its content.
pub const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";
/// Files bigger than this (debug bundles) are brotli-compressed at a fast level, so start-up stays quick.
pub const BROTLI_BEST_MAX_BYTES: usize = 512 * 1024;
/// How often `--watch-assets` looks for changed files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// URLs of one loaded bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleUrls {
    pub name: &'static str,
    pub js: String,
    pub wasm: String,
}

struct Asset {
    content_type: &'static str,
    etag: String,
    identity: Bytes,
    gzip: Bytes,
    brotli: Bytes,
}

/// One immutable snapshot of every asset.
#[derive(Default)]
pub struct AssetSet {
    files: HashMap<String, Asset>,
    bundles: Vec<BundleUrls>,
    stylesheet: Option<String>,
    icon: Option<String>,
    /// The sources and their modification times, to notice a rebuild.
    sources: Vec<(PathBuf, Option<SystemTime>)>,
}

impl AssetSet {
    /// Read, hash and compress everything found under `site_dir` and the stylesheet at `stylesheet`.
    pub fn load(site_dir: &Path, stylesheet: &Path) -> AssetSet {
        let mut set = AssetSet::default();
        for (name, output) in cartwheel_core::page::BUNDLES {
            let pkg = site_dir.join(name).join("pkg");
            let js = pkg.join(format!("{output}.js"));
            // cargo-leptos names the module `<output>.wasm`; wasm-bindgen alone would write `<output>_bg.wasm`.
            let wasm = [pkg.join(format!("{output}.wasm")), pkg.join(format!("{output}_bg.wasm"))]
                .into_iter()
                .find(|p| p.is_file())
                .unwrap_or_else(|| pkg.join(format!("{output}.wasm")));
            set.watch(&js);
            set.watch(&wasm);
            match (set.add(&js, "text/javascript; charset=utf-8"), set.add(&wasm, "application/wasm")) {
                (Some(js), Some(wasm)) => set.bundles.push(BundleUrls { name, js, wasm }),
                _ => {
                    tracing::warn!(bundle = name, dir = %pkg.display(), "bundle not built; the page will not load it")
                }
            }
        }
        set.watch(stylesheet);
        set.stylesheet = set.add(stylesheet, "text/css; charset=utf-8");
        if set.stylesheet.is_none() {
            tracing::warn!(path = %stylesheet.display(), "stylesheet not found");
        }
        // The icon sits next to the stylesheet.
        let icon = stylesheet.with_file_name("favicon.svg");
        set.watch(&icon);
        set.icon = set.add(&icon, "image/svg+xml");
        set
    }

    fn watch(&mut self, path: &Path) {
        self.sources.push((path.to_owned(), modified(path)));
    }

    fn changed_on_disk(&self) -> bool {
        self.sources.iter().any(|(path, seen)| modified(path) != *seen)
    }

    /// Add one file; returns its URL, or `None` if it cannot be read.
    fn add(&mut self, path: &Path, content_type: &'static str) -> Option<String> {
        let identity = std::fs::read(path).ok()?;
        let hash = hex::encode(&Sha256::digest(&identity)[..8]);
        let stem = path.file_stem()?.to_str()?.trim_end_matches("_bg");
        let ext = path.extension()?.to_str()?;
        let name = format!("{stem}-{hash}.{ext}");
        let asset = Asset {
            content_type,
            etag: format!("\"{hash}\""),
            gzip: gzip(&identity),
            brotli: brotli(&identity),
            identity: Bytes::from(identity),
        };
        self.files.insert(name.clone(), asset);
        Some(format!("{ASSETS_PATH}/{name}"))
    }

    /// The bundles that were found, in start order.
    pub fn bundles(&self) -> &[BundleUrls] {
        &self.bundles
    }

    pub fn stylesheet(&self) -> Option<&str> {
        self.stylesheet.as_deref()
    }

    pub fn icon(&self) -> Option<&str> {
        self.icon.as_deref()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn gzip(data: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn brotli(data: &[u8]) -> Bytes {
    let quality = if data.len() <= BROTLI_BEST_MAX_BYTES { 11 } else { 5 };
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality, lgwin: 22, ..Default::default() };
    let _ = brotli::BrotliCompress(&mut &data[..], &mut out, &params);
    Bytes::from(out)
}

/// The current [`AssetSet`], swapped whole when a rebuild is noticed.
#[derive(Clone)]
pub struct Assets {
    current: Arc<RwLock<Arc<AssetSet>>>,
    site_dir: PathBuf,
    stylesheet: PathBuf,
}

impl Assets {
    /// Load everything now (blocking: call before serving).
    pub fn load(site_dir: PathBuf, stylesheet: PathBuf) -> Assets {
        let set = AssetSet::load(&site_dir, &stylesheet);
        tracing::info!(bundles = set.bundles.len(), stylesheet = set.stylesheet.is_some(), "assets loaded");
        Assets { current: Arc::new(RwLock::new(Arc::new(set))), site_dir, stylesheet }
    }

    pub fn current(&self) -> Arc<AssetSet> {
        read(&self.current).clone()
    }

    /// Development: reload whenever a source file changes, until `stop` is cancelled.
    pub fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        let assets = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if !assets.current().changed_on_disk() {
                    continue;
                }
                let (site, style) = (assets.site_dir.clone(), assets.stylesheet.clone());
                if let Ok(set) = tokio::task::spawn_blocking(move || AssetSet::load(&site, &style)).await {
                    tracing::info!(bundles = set.bundles.len(), "assets changed on disk: reloaded");
                    *write(&assets.current) = Arc::new(set);
                }
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

/// The best encoding the client accepts (`q=0` refuses one).
fn negotiate(headers: &HeaderMap) -> Encoding {
    let accepted = |name: &str| {
        headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0));
            coding.eq_ignore_ascii_case(name) && !refused
        })
    };
    if accepted("br") {
        Encoding::Brotli
    } else if accepted("gzip") {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// `GET /assets/{file}`.
async fn serve(State(assets): State<Assets>, UrlPath(file): UrlPath<String>, headers: HeaderMap) -> Response {
    let set = assets.current();
    let Some(asset) = set.files.get(&file) else {
        return AppError::NotFound(format!("no asset {file}")).into_response();
    };
    let mut response = if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(asset.etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let (body, encoding) = match negotiate(&headers) {
            Encoding::Brotli => (asset.brotli.clone(), Some("br")),
            Encoding::Gzip => (asset.gzip.clone(), Some("gzip")),
            Encoding::Identity => (asset.identity.clone(), None),
        };
        let len = body.len();
        let mut r = Response::new(Body::from(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(e) = encoding {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        r
    };
    let h = response.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE_CACHE));
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(ETAG, etag);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn negotiation_prefers_brotli_then_gzip_and_honours_q_zero() {
        assert_eq!(negotiate(&headers("gzip, deflate, br, zstd")), Encoding::Brotli);
        assert_eq!(negotiate(&headers("gzip")), Encoding::Gzip);
        assert_eq!(negotiate(&headers("br;q=0, gzip;q=0.5")), Encoding::Gzip);
        assert_eq!(negotiate(&headers("identity")), Encoding::Identity);
        assert_eq!(negotiate(&HeaderMap::new()), Encoding::Identity);
    }

    #[test]
    fn files_are_named_by_content_and_compressed_losslessly() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("product-list/pkg");
        std::fs::create_dir_all(&pkg).unwrap();
        let js = "export default function init() {}\n".repeat(200);
        std::fs::write(pkg.join("product_list.js"), &js).unwrap();
        std::fs::write(pkg.join("product_list.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let css = dir.path().join("cartwheel.css");
        std::fs::write(&css, "body { margin: 0 }").unwrap();

        let set = AssetSet::load(dir.path(), &css);
        assert_eq!(set.bundles().len(), 1, "only the bundle that exists");
        let urls = &set.bundles()[0];
        assert_eq!(urls.name, "product-list");
        assert!(urls.js.starts_with("/assets/product_list-") && urls.js.ends_with(".js"), "{}", urls.js);
        let asset = &set.files[urls.js.trim_start_matches("/assets/")];
        let mut unzipped = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&asset.gzip[..]), &mut unzipped).unwrap();
        assert_eq!(unzipped, js);
        let mut unbrotli = Vec::new();
        brotli::BrotliDecompress(&mut &asset.brotli[..], &mut unbrotli).unwrap();
        assert_eq!(unbrotli, js.as_bytes());
        assert!(asset.brotli.len() < js.len() / 10);
        assert!(set.stylesheet().is_some());
        assert!(!set.changed_on_disk());

        std::fs::write(pkg.join("product_list.js"), "export default 2;").unwrap();
        let changed = AssetSet::load(dir.path(), &css);
        assert_ne!(changed.bundles()[0].js, urls.js, "new content, new name");
    }
}
