//! The stylesheet and the script, embedded in the binary and served under names that carry a hash
//! of their content, so that browsers may keep them for a year and a new build is fetched at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// `app.3f2a91c0.css`.
    file: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        let hash = hex::encode(&Sha256::digest(bytes)[..5]);
        Asset { file: format!("{stem}.{hash}.{ext}"), content_type, bytes }
    }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        Asset::new("app", "css", "text/css; charset=utf-8", include_bytes!("../assets/app.css")),
        Asset::new("app", "js", "text/javascript; charset=utf-8", include_bytes!("../assets/app.js")),
    ]
});

/// The stylesheet's path.
pub fn stylesheet() -> String {
    format!("/assets/{}", ASSETS[0].file)
}

/// The script's path.
pub fn script() -> String {
    format!("/assets/{}", ASSETS[1].file)
}

/// `GET /assets/{file}`: the file with a year's cache, or 404 for any other name (an old hash too).
pub async fn serve(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.file == file) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let css = stylesheet();
        assert!(css.starts_with("/assets/app.") && css.ends_with(".css"), "{css}");
        let hash = css.trim_start_matches("/assets/app.").trim_end_matches(".css");
        assert_eq!(hash, hex::encode(&Sha256::digest(include_bytes!("../assets/app.css"))[..5]));
    }
}
