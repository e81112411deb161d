//! SHA-256 certificate fingerprints, the values a TLS client pins.

use std::fmt;

use crate::token::{hex_decode, hex_encode};

/// The SHA-256 digest of a DER-encoded certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// A fingerprint string that is not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 fingerprint is 64 hex digits (colons allowed); got {0:?}")]
pub struct FingerprintParseError(String);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// Parse 64 hex digits, optionally separated by colons (`AB:CD:…`, as `openssl x509
    /// -fingerprint -sha256` prints them).
    pub fn from_hex(text: &str) -> Result<Fingerprint, FingerprintParseError> {
        let compact: String = text.trim().chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex_decode(&compact, &mut out).map_err(|()| FingerprintParseError(text.to_string()))?;
        Ok(Fingerprint(out))
    }

    /// Lowercase hex without separators (the launch-channel form).
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    /// `SHA256:` followed by colon-separated uppercase hex pairs, as people compare them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SHA256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_form_and_round_trips() {
        let fp = Fingerprint::of_der(b"abc");
        let colon = fp.to_string().trim_start_matches("SHA256:").to_string();
        assert_eq!(Fingerprint::from_hex(&colon).unwrap(), fp);
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()).unwrap(), fp);
        assert!(Fingerprint::from_hex("12").is_err());
    }
}
