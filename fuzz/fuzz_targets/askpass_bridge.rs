//! The askpass bridge protocol: request and reply lines, and reading a request from a
//! socket. Never a panic, a parsed message encodes back to itself, and a line longer
//! than the limit is refused.
//!
//! Input: a mode byte (bit 0: repeat the rest past the 64 KiB line limit), then the bytes
//! the peer sends.
#![no_main]

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use pv_askpass::bridge::{self, BridgeError, MAX_LINE, Reply, Request};

fuzz_target!(|input: &[u8]| {
    let [mode, line @ ..] = input else {
        return;
    };
    if let Ok(request) = Request::from_line(line) {
        let again = Request::from_line(&request.to_line()).expect("an encoded request decodes");
        assert_eq!(again, request);
    }
    if let Ok(reply) = Reply::from_line(line) {
        let again = Reply::from_line(&reply.to_line()).expect("an encoded reply decodes");
        assert_eq!(again, reply);
    }

    // The same bytes from a real socket, as the application reads a helper's request.
    let sent = if mode & 1 == 1 && !line.is_empty() {
        line.repeat(MAX_LINE / line.len() + 1)
    } else {
        line.to_vec()
    };
    let (helper, app) = UnixStream::pair().expect("a socket pair");
    // A socket buffer holds a couple of lines: write it all before reading.
    let writer = std::thread::spawn(move || {
        let mut helper = helper;
        let _ = helper.write_all(&sent);
        let _ = helper.shutdown(Shutdown::Write);
    });
    let result = bridge::read_request(&app);
    drop(app);
    writer.join().expect("the writer thread");
    let first_line = line.iter().position(|&b| b == b'\n');
    match result {
        Ok(request) => assert_eq!(
            Some(request),
            first_line.and_then(|n| Request::from_line(&line[..=n]).ok())
        ),
        Err(BridgeError::TooLong) => {}
        Err(BridgeError::Closed(_)) => assert!(first_line.is_none() || mode & 1 == 1),
        Err(_) => {}
    }
});
