//! The way back from a job submitted over ssh to a client waiting for a reverse connection.
//!
//! The client listens on this host's loopback. An ssh `-R` tunnel opens a port on the login
//! node — bound to the login node's *loopback*, because sshd binds `-R` ports there unless
//! its `GatewayPorts` says otherwise, and compute nodes cannot reach a loopback port. Two
//! ways on ([`ReverseVia`]):
//!
//! - **relay** (the default, needs no sshd configuration): pv-launch starts a short
//!   `python3` script on the login node, through the same ssh connection and inside the same
//!   cleanup wrapper as a remote server (it is killed, with its process group, when its
//!   channel closes: session end, Ctrl-C, a SIGKILLed pv-launch, a lost connection). It
//!   listens on a free port of the login node's address (`reverse_host`, else all
//!   interfaces), prints that port in a pv-launch ready line, and copies every connection
//!   to the loopback `-R` port, both ways. The job is told to dial the login node (its
//!   `reverse_host`, else its `uname -n`) at that port. The script is on the relay's
//!   command line (it holds nothing secret) and is what [`relay_argv`] shows; `python3`
//!   (3.6 or later: nothing but `socket`, `sys` and `threading`) is what HPC login nodes
//!   nearly always have. Without it the launch fails before anything is submitted, naming
//!   the two other ways.
//! - **gateway-ports**: the `-R` port itself is bound on all the login node's interfaces
//!   (`-R 0.0.0.0:0:…`), which works only where the login node's sshd has
//!   `GatewayPorts clientspecified` (or `yes`); with OpenSSH's default `no` it binds loopback
//!   and the job's dial is refused. So pv-launch reads on the login node how sshd bound the
//!   port ([`LISTENER_PROBE`]: `/proc/net/tcp`, `tcp6`) and, bound on no wildcard address,
//!   fails before submitting, naming both fixes.
//!
//! # Threat model
//!
//! Anyone who can open a TCP connection to the login node's relay port (or public `-R`
//! port) — other users on the login node, any host on the cluster network, more if the
//! login node's firewall lets the port through — reaches the client's listener on this
//! host, exactly as the job does. What they get there is the client's end-to-end
//! authentication, which does not depend on the way: with pv-launch's native handshake the
//! server must present the launch's one-time token (which never left this host but in the
//! job's 0600 secrets file) and, with TLS, the certificate whose fingerprint the job's ready
//! line pinned; ParaView's own handshake checks its connect-id only. A stranger who dials
//! first can therefore not impersonate the server to a native client, but can occupy or
//! abort a reverse launch (denial of service), and learns that a pv-launch client waits.
//! The relay copies bytes and parses nothing; it ends with the ssh channel.

use pv_transport::launch::{LAUNCH_CHANNEL_VERSION, READY_PREFIX};

use super::ReverseVia;

/// The relay, as Python source: `python3 -c <it> <bind address> <loopback port>`.
const RELAY_PY: &str = r#"import socket, sys, threading
bind, target = sys.argv[1], int(sys.argv[2])
srv = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((bind, 0))
srv.listen(16)
sys.stdout.write("READY port=%d handshake=none\n" % srv.getsockname()[1])
sys.stdout.flush()
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve(c):
    try:
        t = socket.create_connection(("127.0.0.1", target))
    except OSError as e:
        sys.stderr.write("pv-launch relay: cannot reach the tunnel: %s\n" % e)
        c.close()
        return
    back = threading.Thread(target=pump, args=(t, c))
    back.daemon = True
    back.start()
    pump(c, t)
    back.join()
    c.close()
    t.close()
while True:
    c, _ = srv.accept()
    w = threading.Thread(target=serve, args=(c,))
    w.daemon = True
    w.start()
"#;

/// The relay's source as one line without control characters (`exec("…")`), so that it
/// survives every login shell's parsing as one argv word.
fn relay_one_line() -> String {
    let source = RELAY_PY.replace("READY", &format!("{READY_PREFIX} {LAUNCH_CHANNEL_VERSION}"));
    let mut literal = String::with_capacity(source.len() + 16);
    for c in source.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '"' => literal.push_str("\\\""),
            '\n' => literal.push_str("\\n"),
            c => literal.push(c),
        }
    }
    format!("exec(\"{literal}\")")
}

/// The relay's argv on the login node: listen on `bind` (empty: all interfaces), copy each
/// connection to `127.0.0.1:<loopback_port>` (the `-R` tunnel).
pub fn relay_argv(bind: &str, loopback_port: u16) -> Vec<String> {
    vec![
        "python3".to_string(),
        "-c".to_string(),
        relay_one_line(),
        bind.to_string(),
        loopback_port.to_string(),
    ]
}

/// What the login node runs to check that the relay can run and learn its name: exits 127
/// without `python3`, else prints `uname -n`.
pub const RELAY_PROBE: &str = "command -v python3 >/dev/null 2>&1 || exit 127; uname -n";

/// What the login node runs to learn where its listening TCP sockets on port `$1` are bound:
/// their local addresses from `/proc/net/tcp` and `/proc/net/tcp6`, one a line, in the
/// kernel's hex; nothing where `/proc/net` is not (then nobody can tell).
pub const LISTENER_PROBE: &str = "p=$(printf '%04X' \"$1\"); \
     for f in /proc/net/tcp /proc/net/tcp6; do [ -r \"$f\" ] && \
     awk -v p=\"$p\" '$4 == \"0A\" { split($2, a, \":\"); if (a[2] == p) print a[1] }' \"$f\"; \
     done; exit 0";

/// Whether [`LISTENER_PROBE`]'s output shows the port listening, but on no wildcard
/// address (`0.0.0.0`, `::`): sshd bound a `-R 0.0.0.0:…` port where compute nodes cannot
/// reach it, which is what its default `GatewayPorts no` does (it binds loopback).
pub fn not_on_all_interfaces(listing: &str) -> bool {
    let mut addresses = listing.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut any = false;
    let wildcard = addresses.any(|a| {
        any = true;
        a.bytes().all(|b| b == b'0')
    });
    any && !wildcard
}

/// What `--dry-run` says about the way back.
pub fn describe(via: ReverseVia, host: Option<&str>) -> String {
    let dial = host.map_or_else(
        || "the login node's `uname -n`".to_string(),
        |h| format!("{h:?}"),
    );
    match via {
        ReverseVia::Relay => format!(
            "relay: python3 on the login node listens on {} (a free port) and copies each \
             connection to the -R tunnel's loopback port; the job dials {dial} at that port",
            host.map_or_else(|| "all its interfaces".to_string(), |h| format!("{h:?}")),
        ),
        ReverseVia::GatewayPorts => format!(
            "gateway-ports: the -R tunnel is bound on all the login node's interfaces (its \
             sshd needs GatewayPorts clientspecified or yes); the job dials {dial} at the \
             tunnel's port"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    /// The relay runs under the local python3 as the login node would run it (through
    /// `sh -c` with the POSIX quoting of the remote command) and copies bytes both ways,
    /// for two connections at once; it dies with its stdin-holding parent's kill.
    #[test]
    fn the_relay_script_copies_both_ways_and_reports_its_port() {
        if Command::new("python3").arg("-V").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but python3 is missing"
            );
            eprintln!("SKIPPED: no python3");
            return;
        }
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = target.local_addr().unwrap().port();
        let line = crate::plan::ssh::remote_command(&relay_argv("127.0.0.1", port), &[], None);
        assert!(!line.chars().any(|c| c.is_control()), "{line}");
        let mut relay = Command::new("sh")
            .args(["-c", &line])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(relay.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let ready = pv_transport::launch::ReadyLine::parse(first.trim_end())
            .expect("a ready line")
            .unwrap();
        let mut clients = Vec::new();
        for i in 0..2u8 {
            let mut c = TcpStream::connect(("127.0.0.1", ready.port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(&[b'a' + i; 3]).unwrap();
            let (mut s, _) = target.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = [0u8; 3];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, [b'a' + i; 3]);
            s.write_all(b"back").unwrap();
            drop(s);
            clients.push(c);
        }
        for mut c in clients {
            let mut back = Vec::new();
            c.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"back", "the far end's close reaches the near end");
        }
        relay.kill().unwrap();
        relay.wait().unwrap();
    }

    /// The probe runs under the local sh against this host's /proc/net: a listener on
    /// loopback only is told from one on all interfaces.
    #[test]
    fn the_listener_probe_tells_loopback_from_all_interfaces() {
        let probe = |port: u16| {
            let out = Command::new("sh")
                .args(["-c", LISTENER_PROBE, "sh", &port.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let lo = TcpListener::bind("127.0.0.1:0").unwrap();
        let lo_out = probe(lo.local_addr().unwrap().port());
        assert_eq!(lo_out.lines().count(), 1, "{lo_out}");
        assert!(not_on_all_interfaces(&lo_out), "{lo_out}");
        let all = TcpListener::bind("0.0.0.0:0").unwrap();
        let all_out = probe(all.local_addr().unwrap().port());
        assert!(!not_on_all_interfaces(&all_out), "{all_out}");
        // No listener there (or no /proc/net): nobody can tell, so no complaint.
        assert!(!not_on_all_interfaces(""));
        assert!(not_on_all_interfaces(
            "0100007F\n00000000000000000000000001000000\n"
        ));
        assert!(!not_on_all_interfaces(
            "0100007F\n00000000000000000000000000000000\n"
        ));
    }

    #[test]
    fn the_relay_line_has_no_control_character_and_the_ready_prefix() {
        let one = relay_one_line();
        assert!(!one.chars().any(|c| c.is_control()));
        assert!(one.contains(&format!("{READY_PREFIX} {LAUNCH_CHANNEL_VERSION} port=%d")));
    }
}
