//! TLS credentials that gateways serve (`credentialName` → a Kubernetes Secret), as the model
//! holds them: PEM bytes for the certificate chain, the private key and an optional CA.
//!
//! Key material never appears in logs or debug output: `Debug` redacts it and `Serialize`
//! (used for snapshot hashing) writes digests only.

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// One Secret's TLS material.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsCredential {
    pub certificate_chain: Vec<u8>,
    pub private_key: Vec<u8>,
    /// `ca.crt` / `cacert`: the CA that client certificates must chain to (MUTUAL).
    pub ca_certificate: Option<Vec<u8>>,
}

impl TlsCredential {
    pub fn has_key_pair(&self) -> bool {
        !self.certificate_chain.is_empty() && !self.private_key.is_empty()
    }
}

impl std::fmt::Debug for TlsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredential")
            .field("certificate_chain_bytes", &self.certificate_chain.len())
            .field("private_key", &"<redacted>")
            .field(
                "ca_certificate_bytes",
                &self.ca_certificate.as_ref().map(Vec::len),
            )
            .finish()
    }
}

impl Serialize for TlsCredential {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
        let parts = [
            digest(&self.certificate_chain),
            digest(&self.private_key),
            self.ca_certificate
                .as_deref()
                .map(digest)
                .unwrap_or_default(),
        ];
        parts.serialize(s)
    }
}

/// istiod's suffix for the CA half of a credential (`<name>-cacert`).
pub const CA_SUFFIX: &str = "-cacert";
/// SDS resource names for Kubernetes Secrets.
pub const KUBERNETES_SECRET_PREFIX: &str = "kubernetes://";
