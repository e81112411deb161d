//! Examples for pv-launch: the `pv-demo-server` binary, embedding programs and sample profiles.
#![forbid(unsafe_code)]
