//! The native handshake, either side, against a peer that says the fuzz bytes: never a
//! panic, never a hang.
//!
//! Input: flags byte (bit 0 acceptor, bit 1 server role, bit 2 connect id 4242, bit 3 the
//! acceptor has no room, bit 4 speak versions 1..=3 instead of 1), pipe-size byte, then
//! what the peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_launch_fuzz::{Setup, drive};
use pv_transport::Token;
use pv_transport::handshake::native::NativeHandshake;

fuzz_target!(|input: &[u8]| {
    let Some((setup, peer)) = Setup::split(input) else {
        return;
    };
    let mut handshake = NativeHandshake::new(Token::from_bytes([7; 32]));
    if setup.bit(2) {
        handshake = handshake.with_connect_id(4242);
    }
    if setup.bit(4) {
        handshake = handshake.with_versions(1, 3);
    }
    // The peer cannot know our fresh nonce, so it can never prove the token: success
    // would mean authentication is broken.
    if let Ok(peer) = drive(&handshake, setup, peer) {
        panic!("a peer without the token was authenticated: {peer:?}");
    }
});
