//! The browser client (docs/browser.md): with `--web-dir DIR` the relay serves the web build of
//! the UI (`ui/dist-web`): `GET /` and `GET /invite/CODE` get `index.html` (the page reads the
//! code from its address and offers to join), any other path a file under DIR.
//!
//! [`resolve`] turns a request path into a file path relative to DIR and is the only place that
//! decides what may be read: every segment is percent-decoded and then checked, so `..`, `.`,
//! hidden files, backslashes, NULs and encoded slashes (`%2e%2e`, `%2f`, `%5c`) are refused before
//! the file system is touched. [`WebDir::read`] then also refuses files that resolve (symlinks)
//! outside DIR, anything but regular files, and files over [`MAX_FILE_BYTES`].

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The largest file served (the web build's biggest chunk is well under 1 MB).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Request paths longer than this are refused without looking further.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a path is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebError {
    #[error("no such file")]
    NotFound,
    #[error("refused path: {0}")]
    Forbidden(&'static str),
    #[error("file larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("reading the file failed: {0}")]
    Io(String),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An invite code as links carry it (the relay makes 10 alphanumerics; allow some slack).
fn is_invite_code(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` decoding of one path segment; malformed escapes and non-UTF-8 results are refused.
fn percent_decode(segment: &str) -> Result<String, WebError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(WebError::Forbidden("malformed percent escape")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| WebError::Forbidden("not UTF-8"))
}

/// The file (relative to the web directory) a request path names. Pure: no file system access.
pub fn resolve(path: &str) -> Result<PathBuf, WebError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(WebError::Forbidden("path too long"));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(WebError::Forbidden("not an absolute path"));
    };
    if rest.is_empty() || rest == "index.html" {
        return Ok(PathBuf::from("index.html"));
    }
    // The single-page app reads the code itself; only well-formed codes get the page.
    if let Some(code) = rest.strip_prefix("invite/") {
        let code = code.strip_suffix('/').unwrap_or(code);
        return if is_invite_code(code) {
            Ok(PathBuf::from("index.html"))
        } else {
            Err(WebError::NotFound)
        };
    }
    let mut out = PathBuf::new();
    for raw in rest.split('/') {
        let seg = percent_decode(raw)?;
        if seg.is_empty() {
            return Err(WebError::Forbidden("empty segment"));
        }
        if seg == "." || seg == ".." {
            return Err(WebError::Forbidden("dot segment"));
        }
        if seg.starts_with('.') {
            return Err(WebError::Forbidden("hidden file"));
        }
        if seg.contains(['/', '\\', '\0', ':']) {
            return Err(WebError::Forbidden("separator or NUL in a segment"));
        }
        out.push(seg);
    }
    Ok(out)
}

/// The content type of a file served, by its extension.
pub fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// The web build's directory, checked at start.
#[derive(Clone, Debug)]
pub struct WebDir {
    root: PathBuf,
}

impl WebDir {
    /// `dir` must exist and hold `index.html` (else the relay refuses to start, saying why).
    pub fn open(dir: &Path) -> anyhow::Result<WebDir> {
        let root = dir.canonicalize().map_err(|e| {
            anyhow::anyhow!(
                "--web-dir {}: {e} (build it with `npm run build:web` in ui/)",
                dir.display()
            )
        })?;
        anyhow::ensure!(
            root.join("index.html").is_file(),
            "--web-dir {}: no index.html there (build it with `npm run build:web` in ui/)",
            dir.display()
        );
        Ok(WebDir { root })
    }

    /// The bytes of the file a request path names.
    pub async fn read(&self, path: &str) -> Result<(PathBuf, Vec<u8>), WebError> {
        let rel = resolve(path)?;
        let full = self.root.join(&rel);
        let real = match tokio::fs::canonicalize(&full).await {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(WebError::NotFound),
            Err(e) => return Err(WebError::Io(e.to_string())),
        };
        if !real.starts_with(&self.root) {
            return Err(WebError::Forbidden("outside the web directory"));
        }
        let meta = tokio::fs::metadata(&real)
            .await
            .map_err(|e| WebError::Io(e.to_string()))?;
        if !meta.is_file() {
            return Err(WebError::NotFound);
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(WebError::TooLarge);
        }
        let bytes = tokio::fs::read(&real)
            .await
            .map_err(|e| WebError::Io(e.to_string()))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(WebError::TooLarge);
        }
        Ok((rel, bytes))
    }

    async fn respond(&self, req: Request<Body>) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        match self.read(req.uri().path()).await {
            Ok((rel, bytes)) => {
                let mut res = Response::new(Body::from(bytes));
                let h = res.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&rel)),
                );
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                // Vite names built assets by content hash: they never change under a name.
                let cache = if rel.starts_with("assets") {
                    "public, max-age=31536000, immutable"
                } else {
                    "no-cache"
                };
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
                res
            }
            Err(e) => {
                if let WebError::Io(_) = e {
                    tracing::warn!(path = req.uri().path(), "web client: {e}");
                }
                (e.status(), e.to_string()).into_response()
            }
        }
    }
}

/// The routes for everything the relay's own routes do not take.
pub fn router(dir: WebDir) -> Router {
    Router::new().fallback(move |req: Request<Body>| {
        let dir = dir.clone();
        async move { dir.respond(req).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_invite_links_get_index_html() {
        for p in [
            "/",
            "/index.html",
            "/invite/k7Qm2xRtZp",
            "/invite/k7Qm2xRtZp/",
        ] {
            assert_eq!(resolve(p), Ok(PathBuf::from("index.html")), "{p}");
        }
        assert_eq!(resolve("/invite/"), Err(WebError::NotFound));
        assert_eq!(resolve("/invite/a%2e%2e"), Err(WebError::NotFound));
        assert_eq!(resolve("/invite/a/b"), Err(WebError::NotFound));
    }

    #[test]
    fn files_resolve_under_the_directory() {
        assert_eq!(
            resolve("/assets/index-abc.js"),
            Ok(PathBuf::from("assets/index-abc.js"))
        );
        assert_eq!(resolve("/a%20b.css"), Ok(PathBuf::from("a b.css")));
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for p in [
            "/..",
            "/../etc/passwd",
            "/assets/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/etc/passwd",
            "/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/..%2fetc%2fpasswd",
            "/..%5cetc",
            "/assets\\..\\..\\etc",
            "/./index.html",
            "/.git/config",
            "/a%00b",
            "/a%zz",
            "/a%2",
            "//etc/passwd",
            "/assets//x.js",
            "/C:%5cwindows",
            "etc/passwd",
            "",
        ] {
            assert!(
                matches!(resolve(p), Err(WebError::Forbidden(_))),
                "{p:?} -> {:?}",
                resolve(p)
            );
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(matches!(resolve(&long), Err(WebError::Forbidden(_))));
    }

    #[test]
    fn double_encoding_stays_a_literal_name() {
        // `%252e%252e` decodes once to the file name "%2e%2e", which is not a dot segment.
        assert_eq!(
            resolve("/%252e%252e/x"),
            Ok(PathBuf::from("%2e%2e").join("x"))
        );
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("assets/a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("assets/a.css")),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }

    #[tokio::test]
    async fn reads_files_refuses_symlinks_out_and_big_files() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "no").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>hum</p>").unwrap();
        std::fs::create_dir(dir.path().join("assets")).unwrap();
        std::fs::write(dir.path().join("assets/a.js"), "1").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak")).unwrap();
        let big = std::fs::File::create(dir.path().join("big.bin")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let web = WebDir::open(dir.path()).unwrap();

        let (rel, bytes) = web.read("/invite/abc").await.unwrap();
        assert_eq!(
            (rel, bytes),
            (PathBuf::from("index.html"), b"<p>hum</p>".to_vec())
        );
        assert_eq!(web.read("/assets/a.js").await.unwrap().1, b"1");
        assert_eq!(web.read("/nope.js").await, Err(WebError::NotFound));
        assert_eq!(web.read("/assets").await, Err(WebError::NotFound));
        #[cfg(unix)]
        assert_eq!(
            web.read("/leak").await,
            Err(WebError::Forbidden("outside the web directory"))
        );
        assert_eq!(web.read("/big.bin").await, Err(WebError::TooLarge));

        let empty = tempfile::tempdir().unwrap();
        let err = WebDir::open(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no index.html"), "{err}");
    }
}
