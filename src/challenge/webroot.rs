//! HTTP-01 through an existing web server's document root.

use std::path::PathBuf;

use crate::fsutil::{FileSpec, write_atomic};

pub struct Webroot {
    dir: PathBuf,
}

impl Webroot {
    pub fn new(root: PathBuf) -> Self {
        Self { dir: root.join(".well-known").join("acme-challenge") }
    }

    pub fn present(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        if !is_token(token) {
            return Err(format!("the CA sent a malformed token {token:?}; refusing to write it as a file name"));
        }
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| write_atomic(&self.dir.join(token), key_authorization.as_bytes(), FileSpec::PUBLIC))
            .map_err(|e| format!("cannot write the HTTP-01 token into [http01] webroot ({}): {e}", self.dir.display()))
    }

    pub fn cleanup(&self, token: &str) {
        if is_token(token) {
            let _ = std::fs::remove_file(self.dir.join(token));
        }
    }
}

/// RFC 8555 tokens are base64url; anything else must never become a path.
pub fn is_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
