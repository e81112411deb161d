//! The ParaView handshake, either side (dialler: VTK's client half; acceptor: its server
//! half), against a peer that says the fuzz bytes: never a panic, never a hang.
//!
//! Input: flags byte (bit 0 acceptor, bit 1 server role, bit 2 connect id 4242, bit 3 the
//! acceptor has no room, bit 4 we send big-endian, bit 5 64-bit ids, bit 6 a 32-byte limit
//! on the peer's handshake string), pipe-size byte, then what the peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pv_launch_fuzz::{Setup, drive};
use pv_transport::Side;
use pv_transport::handshake::paraview::{ByteOrder, ParaViewHandshake};

fuzz_target!(|input: &[u8]| {
    let Some((setup, peer)) = Setup::split(input) else {
        return;
    };
    let mut builder = ParaViewHandshake::builder()
        .version(5, 11)
        .ids_64bit(setup.bit(5))
        .byte_order(if setup.bit(4) {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        });
    if setup.bit(2) {
        builder = builder.connect_id(4242);
    }
    if setup.bit(6) {
        builder = builder.max_string_len(32);
    }
    let handshake = builder.build().expect("a valid configuration");
    if let Ok(info) = drive(&handshake, setup, peer) {
        assert_eq!(info.protocol, 511);
        // An acceptor without room closes instead of sending verdict 0.
        assert!(
            setup.admits() || setup.side() == Side::Dialler,
            "accepted a dialler without room for it"
        );
    }
});
