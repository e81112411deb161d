//! The secrets line on stdin, as pv-launch writes it for a server it starts (shared by
//! `pv-demo-server` and `pv-front`).

use std::time::Duration;

use pv_transport::launch::Secrets;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Read stdin until the secrets line (other lines are skipped) within `wait`. At the end of
/// stdin the error is `eof_error`.
pub async fn read(wait: Duration, eof_error: &str) -> Result<Secrets, String> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(wait, stdin.read_line(&mut line))
            .await
            .map_err(|_| format!("no secrets line on stdin within {wait:?}"))?
            .map_err(|e| format!("reading stdin: {e}"))?;
        if n == 0 {
            return Err(eof_error.to_string());
        }
        if let Some(parsed) = Secrets::parse(&line) {
            return parsed.map_err(|e| e.to_string());
        }
    }
}
