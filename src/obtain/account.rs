//! The ACME account: created once per directory URL, stored 0600 in state_dir, reused after.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, HttpClient, NewAccount};
use serde::{Deserialize, Serialize};

use crate::config::AcmeConfig;
use crate::fsutil::{FileSpec, create_private_dir, write_atomic};
use crate::obtain::problem::describe;
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

/// Load the account for `[acme] directory`, or create it; `http` builds a fresh HTTP client.
pub async fn load_or_create(state: &StateDir, acme: &AcmeConfig, http: impl Fn() -> Box<dyn HttpClient>) -> Result<Account, String> {
    let url = acme.directory_url();
    let path = state.account_path(url);
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();

    if let Ok(bytes) = std::fs::read(&path) {
        let stored: StoredAccount = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the stored ACME account {} is corrupt ({e}); move it away to create a new account", path.display()))?;
        let account = Account::builder_with_http(http()).from_credentials(stored.credentials).await.map_err(|e| describe(&e, url))?;
        if stored.contact != acme.contact {
            retry_bad_nonce!(account.update_contacts(&contact).await)
                .map_err(|e| format!("updating the account contact: {}", describe(&e, url)))?;
            tracing::info!(account = account.id(), contact = ?acme.contact, "ACME account contact updated");
            // The credentials were moved into the account; parse them again to store the update.
            let mut stored: StoredAccount = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            stored.contact = acme.contact.clone();
            save(&path, &stored)?;
        }
        tracing::debug!(account = account.id(), "ACME account loaded");
        return Ok(account);
    }

    let eab = match &acme.eab {
        Some(eab) => {
            let key = decode_hmac_key(&eab.hmac_key).map_err(|_| "[acme] eab.hmac_key is not base64".to_owned())?;
            Some(ExternalAccountKey::new(eab.kid.clone(), &key))
        }
        None => None,
    };
    let new = NewAccount { contact: &contact, terms_of_service_agreed: acme.accept_terms, only_return_existing: false };
    let (account, credentials) = retry_bad_nonce!(Account::builder_with_http(http()).create(&new, url.to_owned(), eab.as_ref()).await)
        .map_err(|e| format!("creating the ACME account: {}", describe(&e, url)))?;
    let stored = StoredAccount { directory: url.to_owned(), contact: acme.contact.clone(), credentials };
    save(&path, &stored)?;
    tracing::info!(account = account.id(), directory = url, "ACME account created");
    Ok(account)
}

fn save(path: &std::path::Path, stored: &StoredAccount) -> Result<(), String> {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        let json = serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?;
        write_atomic(path, &json, FileSpec::PRIVATE)
    };
    write().map_err(|e| format!("cannot store the ACME account in {}: {e}", path.display()))
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
