//! `toolgate demo` end to end, as a user runs it: every scripted attack is caught and
//! shown, the blocks reach the sinks, and the SQL summary reads the run's history.

use crate::common;

use common::{stderr, toolgate};

#[test]
fn the_demo_catches_every_scripted_attack_and_summarises_with_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = toolgate(
        &[
            "demo",
            "--seconds",
            "12",
            "--agents",
            "6",
            "--data-dir",
            "run",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", stderr(&out));
    let has = |agent: &str, needle: &str| {
        stdout
            .lines()
            .any(|l| l.contains(&format!("{agent} ")) && l.contains(needle))
    };
    let expectations = [
        (
            "support-bot-0",
            "critical  support-bot-0  definition files/add_note",
        ),
        ("support-bot-1", "rug_pull"),
        ("support-bot-1", "refused   support-bot-1  crm.get_record"),
        ("support-bot-2", "provenance web/post_message"),
        ("support-bot-2", "refused   support-bot-2  web.post_message"),
        ("support-bot-3", "verdict   support-bot-3"),
        (
            "support-bot-3",
            "refused   support-bot-3  payments.send_money",
        ),
        ("support-bot-4", "volume crm/get_record: bulk-read"),
    ];
    for (agent, needle) in expectations {
        assert!(has(agent, needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("refused   support-bot-5"),
        "the agent without an attack is never refused:\n{stdout}"
    );
    for title in [
        "Findings by detector and rule:",
        "Agents with findings:",
        "Decisions sent to the sinks:",
    ] {
        assert!(stdout.contains(title), "no {title:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("| provenance | untrusted_destination"),
        "{stdout}"
    );

    // A rerun clears its own directory; someone else's is refused.
    std::fs::create_dir(dir.path().join("mine")).expect("mkdir");
    std::fs::write(dir.path().join("mine/keep.txt"), "x").expect("write");
    let refused = toolgate(&["demo", "--data-dir", "mine"], dir.path());
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("was not made by toolgate demo"),
        "{}",
        stderr(&refused)
    );
    assert!(dir.path().join("mine/keep.txt").exists());
}
