//! A test in a process of its own, for the one whose assertions depend on what the process keeps
//! for all its tests.
//!
//! The AWS SDK keeps its retry quota (a token bucket per service and Region, `ecr-us-west-2`,
//! `dynamodb-us-east-1`...) for the whole process: every retry spends from it, and only a request
//! that succeeds at once gives a token back. The moto tests of this binary meet moto's HTTP 500
//! for DescribeImageReplicationStatus in us-west-2 at every sweep, and few ECR requests succeed
//! there, so by the time a late test runs the SDK may no longer retry ECR in us-west-2 at all.
//! A test that counts those retries runs again in a fresh process, where only it spends.

use std::process::Command;

/// Set on the process started for the test it names.
const VARIABLE: &str = "IT_ALONE";

/// Whether the calling test, `test` in module `module` (`module_path!()`), runs its body here.
/// In the process started for it, yes. Otherwise this runs it again in a process of its own (the
/// same test binary, filtered to that one test), fails the way it failed, and answers no.
pub fn in_own_process(module: &str, test: &str) -> bool {
    // The binary names its tests by their path without the crate's name.
    let (_, path) = module.split_once("::").expect("a module of the test crate");
    let name = format!("{path}::{test}");
    if std::env::var_os(VARIABLE).is_some_and(|v| v == name.as_str()) {
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([&name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(VARIABLE, &name)
        .output()
        .expect("the test binary runs again");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "{name}, run in a process of its own, failed ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} is not the name of one test of this binary"
    );
    false
}
