//! The harness itself: what every other test relies on to find programs and choose ports.

use crate::common::*;
use std::collections::HashSet;

#[test]
#[should_panic(expected = "`regcert-no-such-tool` is not installed, and the tests need it: `apt-get install regcert-no-such-tool`")]
fn a_missing_tool_fails_the_test_and_says_how_to_install_it() {
    tool("regcert-no-such-tool");
}

#[test]
fn no_port_is_handed_out_twice() {
    // Threads, as the test runner's are; half the ports stay bound, half are released at once.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let mut ports = Vec::new();
                for _ in 0..50 {
                    if i % 2 == 0 {
                        let l = listener();
                        ports.push(l.local_addr().unwrap().port());
                        kept.push(l);
                    } else {
                        ports.push(free_port());
                    }
                }
                ports
            })
        })
        .collect();
    let ports: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let unique: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
}
