//! The console's static files, compiled into the binary: uPlot and Pico (minified, pinned by
//! sha256 in `assets/vendor/SHA256SUMS` with their licences beside them) and our own script and
//! stylesheet. Nothing is fetched from elsewhere, so the pages work without internet and under a
//! `default-src 'self'` Content-Security-Policy.

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// One served file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file under `/assets/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.min.css"),
    },
    Asset {
        name: "vendor/pico.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/pico.min.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/console.css"),
    },
];

/// The pinned digests of the vendored files (`sha256sum` format).
pub const VENDOR_SHA256SUMS: &str = include_str!("../assets/vendor/SHA256SUMS");

/// `/assets/{*path}`: the file, cached by the browser for an hour (the page links it with the
/// binary's version, so an upgrade is fetched anew).
pub async fn serve(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == path) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "private, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn vendored_files_are_the_pinned_ones() {
        let mut checked = 0;
        for line in VENDOR_SHA256SUMS.lines().filter(|l| !l.trim().is_empty()) {
            let (digest, name) = line.split_once("  ").expect("`DIGEST  NAME` lines");
            let asset = ASSETS
                .iter()
                .find(|a| a.name == format!("vendor/{name}"))
                .unwrap_or_else(|| panic!("{name} is pinned but not served"));
            assert_eq!(hex::encode(Sha256::digest(asset.body)), digest, "{name} changed");
            checked += 1;
        }
        let vendored = ASSETS.iter().filter(|a| a.name.starts_with("vendor/")).count();
        assert_eq!(checked, vendored, "every vendored file is pinned");
    }
}
