//! Test helper for the heartbeat: opens one handshaken connection to itself on loopback with
//! a fast heartbeat (first probe after 1 s idle, then every 1 s, dead after 2 unanswered),
//! prints `connected`, and then waits on both ends until one of them sees the connection
//! fail, printing `dead after <seconds>` (or `alive` if nothing happened within 30 s).
//!
//! The end-to-end test runs it in a fresh network namespace and takes that namespace's
//! loopback interface down, so the peer goes silent without closing anything.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use pv_transport::handshake::native::NativeHandshake;
use pv_transport::{
    ConnectTimeout, ConnectionConfig, ConnectionManager, ConnectionMode, Heartbeat, Listener,
    RetryPolicy, Token, loopback,
};
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let hb = Heartbeat {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        probes: 2,
    };
    let token = Token::generate();
    let mut config = ConnectionConfig::new(NativeHandshake::new(token));
    config.heartbeat = Some(hb);
    let server = ConnectionManager::new(ConnectionMode::Single, config.clone());
    let client = ConnectionManager::new(ConnectionMode::Single, config);
    let listener = Listener::bind(loopback(0), Some(hb)).await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (s, c) = tokio::join!(
        server.accept_client(listener, Some(Duration::from_secs(10))),
        client.connect_to_remote(
            "127.0.0.1",
            port,
            RetryPolicy::new(ConnectTimeout::Once),
            |_, _, _| {}
        )
    );
    let (mut s, mut c) = (s.expect("accept"), c.expect("connect"));
    println!("connected");
    let start = Instant::now();
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            r = s.read(&mut a) => r,
            r = c.read(&mut b) => r,
        }
    })
    .await;
    match outcome {
        Ok(Err(e)) => println!("dead after {:.1} s: {e}", start.elapsed().as_secs_f64()),
        Ok(Ok(n)) => println!("unexpected read of {n} bytes"),
        Err(_) => println!("alive"),
    }
}
