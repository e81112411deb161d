//! Running a plan from the command line: start, supervise, connect, wait, clean up.

use crate::cli::{EXIT_FAILURE, LaunchArgs};
use crate::plan::Plan;

/// Run `plan` as the CLI does and return the exit status.
pub fn run(plan: Plan, _args: &LaunchArgs) -> i32 {
    eprintln!(
        "pv-launch: starting servers is not implemented yet (server {:?}); use --dry-run",
        plan.server()
    );
    EXIT_FAILURE
}
