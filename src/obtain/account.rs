//! The ACME account: created once per directory URL, stored 0600 in state_dir, reused after.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, HttpClient, NewAccount};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{AcmeConfig, IssuerRef};
use crate::fsutil::{FileSpec, create_private_dir, write_atomic};
use crate::obtain::error::Error;
use crate::obtain::jws::Signer;
use crate::obtain::tls::LastErrorResponse;
use crate::state::StateDir;

/// What we keep of an account. The contact list is kept so that a changed config is noticed
/// and sent to the CA as an update instead of creating a second account.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    contact: Vec<String>,
    credentials: AccountCredentials,
}

/// EAB keys are base64url without padding (RFC 8555); some CAs hand out padded or standard base64.
pub fn decode_hmac_key(key: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let trimmed = key.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).or_else(|_| STANDARD.decode(key.trim()))
}

/// Load the account for the `directory` of the CA `name` (`[acme]`, `[acme_ca.NAME]`, which
/// messages name), or create it; `http` builds a fresh HTTP client
/// whose error responses leave what they said in `last_error`. With it, a signer for the
/// requests instant-acme does not make (fetching alternate chains).
pub(crate) async fn load_or_create(
    state: &StateDir,
    acme: &AcmeConfig,
    name: &IssuerRef,
    http: impl Fn() -> Box<dyn HttpClient>,
    last_error: &LastErrorResponse,
) -> Result<(Account, Signer), Error> {
    let url = acme.directory_url();
    if url.starts_with("http://") {
        tracing::warn!(directory = %url, "ACME over plain http: accepted only for a CA on this host (tests); real CAs need https://");
    }
    let path = state.account_path(url);
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
    let section = name.section();
    let acme_error = |e: instant_acme::Error| Error::from_acme(&e, url, &section, last_error.take());

    if let Ok(bytes) = std::fs::read(&path).map(Zeroizing::new) {
        let corrupt = |e: serde_json::Error| {
            Error::Local(format!("the stored ACME account {} is corrupt ({e}); move it away to create a new account", path.display()))
        };
        let stored: StoredAccount = serde_json::from_slice(&bytes).map_err(corrupt)?;
        let key = Zeroizing::new(stored.credentials.private_key().secret_pkcs8_der().to_vec());
        let account = Account::builder_with_http(http()).from_credentials(stored.credentials).await.map_err(acme_error)?;
        let signer = signer(&account, &key, &path)?;
        if stored.contact != acme.contact {
            retry_bad_nonce!(account.update_contacts(&contact).await).map_err(|e| acme_error(e).during("updating the account contact"))?;
            tracing::info!(account = account.id(), contact = ?acme.contact, "ACME account contact updated");
            // The credentials were moved into the account; parse them again to store the update.
            let mut stored: StoredAccount = serde_json::from_slice(&bytes).map_err(corrupt)?;
            stored.contact = acme.contact.clone();
            save(&path, &stored)?;
        }
        tracing::debug!(account = account.id(), "ACME account loaded");
        return Ok((account, signer));
    }

    let eab = match &acme.eab {
        Some(eab) => {
            let key = decode_hmac_key(&eab.hmac_key).map_err(|_| Error::Local(format!("{section} eab.hmac_key is not base64")))?;
            Some(ExternalAccountKey::new(eab.kid.clone(), &key))
        }
        None => None,
    };
    let new = NewAccount { contact: &contact, terms_of_service_agreed: acme.accept_terms, only_return_existing: false };
    let (account, credentials) = retry_bad_nonce!(Account::builder_with_http(http()).create(&new, url.to_owned(), eab.as_ref()).await)
        .map_err(|e| acme_error(e).during("creating the ACME account"))?;
    let signer = signer(&account, credentials.private_key().secret_pkcs8_der(), &path)?;
    let stored = StoredAccount { directory: url.to_owned(), contact: acme.contact.clone(), credentials };
    save(&path, &stored)?;
    tracing::info!(account = account.id(), directory = url, "ACME account created");
    Ok((account, signer))
}

fn signer(account: &Account, key_pkcs8: &[u8], path: &std::path::Path) -> Result<Signer, Error> {
    Signer::new(account.id(), key_pkcs8)
        .map_err(|e| Error::Local(format!("{e} ({}); move it away to create a new account", path.display())))
}

/// Keep an account created by another client (`regcert import acme.sh`) as the account for
/// `directory`: its URL and its P-256 key (PKCS#8 DER).
pub(crate) fn adopt(
    state: &StateDir,
    directory: &str,
    contact: Vec<String>,
    account_url: &str,
    key_pkcs8: &[u8],
) -> Result<std::path::PathBuf, Error> {
    let key = Zeroizing::new(URL_SAFE_NO_PAD.encode(key_pkcs8));
    let credentials = serde_json::json!({ "id": account_url, "key_pkcs8": key.as_str(), "directory": directory });
    let credentials: AccountCredentials =
        serde_json::from_value(credentials).map_err(|e| Error::Local(format!("the account for {directory} cannot be stored: {e}")))?;
    let path = state.account_path(directory);
    save(&path, &StoredAccount { directory: directory.to_owned(), contact, credentials })?;
    Ok(path)
}

/// The URL of the account stored for `directory` and its file, if one is stored (so that an
/// import never replaces it silently).
pub(crate) fn stored_id(state: &StateDir, directory: &str) -> Result<Option<(String, std::path::PathBuf)>, String> {
    let path = state.account_path(directory);
    let bytes = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the stored ACME account {}: {e}", path.display())),
    };
    // Only the URL is parsed out: the key is skipped, never copied into an unwiped string.
    #[derive(Deserialize)]
    struct Stored {
        credentials: Id,
    }
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let stored: Stored = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the stored ACME account {} is corrupt ({e}); move it away first", path.display()))?;
    Ok(Some((stored.credentials.id, path)))
}

/// Store an account (0600, atomically); it holds the account's private key.
fn save(path: &std::path::Path, stored: &StoredAccount) -> Result<(), Error> {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        let json = Zeroizing::new(serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?);
        write_atomic(path, &json, FileSpec::PRIVATE)
    };
    write().map_err(|e| Error::Local(format!("cannot store the ACME account in {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_keys_in_every_common_encoding() {
        let raw = b"\xfb\xff\x00secret";
        for enc in [URL_SAFE_NO_PAD.encode(raw), STANDARD.encode(raw), base64::engine::general_purpose::URL_SAFE.encode(raw)] {
            assert_eq!(decode_hmac_key(&enc).unwrap(), raw, "{enc}");
        }
        assert!(decode_hmac_key("not base64 !").is_err());
    }
}
