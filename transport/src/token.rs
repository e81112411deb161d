//! One-time tokens: the shared secret the native handshake proves knowledge of.
//!
//! A token is 32 random bytes from the operating system's generator, made fresh for each
//! launch. It travels only over the launch channel (a child's stdin or environment, an ssh
//! channel) as 64 hex characters, never on argv and never over the connection itself. Its
//! `Debug` form is redacted and its bytes are wiped when it is dropped.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a token in bytes.
pub const TOKEN_LEN: usize = 32;

/// A one-time secret shared by the launcher and the server it starts.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Token([u8; TOKEN_LEN]);

/// A token string that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token is {expected} hex characters; got {got} characters{detail}", expected = TOKEN_LEN * 2)]
pub struct TokenParseError {
    got: usize,
    detail: &'static str,
}

impl Token {
    /// A fresh random token.
    pub fn generate() -> Token {
        let mut bytes = [0u8; TOKEN_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random number generator failed");
        Token(bytes)
    }

    /// Wrap raw bytes (for tests and for callers that derive tokens themselves).
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Token {
        Token(bytes)
    }

    /// The raw bytes (the HMAC key of the native handshake).
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// The 64-character lowercase hex form used on the launch channel.
    ///
    /// The returned string holds the secret: wipe it (`zeroize`) when done.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// Parse the 64-character hex form (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Token, TokenParseError> {
        let text = text.trim();
        let mut bytes = [0u8; TOKEN_LEN];
        if text.len() != TOKEN_LEN * 2 {
            return Err(TokenParseError {
                got: text.chars().count(),
                detail: "",
            });
        }
        hex_decode(text, &mut bytes).map_err(|()| TokenParseError {
            got: text.len(),
            detail: ", not all of them hex digits",
        })?;
        Ok(Token(bytes))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Decode hex (either case) into `out`, which must be exactly half as long as `text`.
pub(crate) fn hex_decode(text: &str, out: &mut [u8]) -> Result<(), ()> {
    let bytes = text.as_bytes();
    if bytes.len() != out.len() * 2 {
        return Err(());
    }
    fn nibble(c: u8) -> Result<u8, ()> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(()),
        }
    }
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_redacted_debug() {
        let t = Token::generate();
        assert_eq!(Token::from_hex(&t.to_hex()).unwrap(), t);
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_ne!(Token::generate(), t, "two fresh tokens differ");
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!(
            Token::from_hex("abc")
                .unwrap_err()
                .to_string()
                .contains("64 hex")
        );
        let bad = "g".repeat(64);
        assert!(
            Token::from_hex(&bad)
                .unwrap_err()
                .to_string()
                .contains("not all")
        );
    }
}
