//! Any bytes as an AgentDojo run file: converted or reported as a bad file, never a
//! panic, and every event produced is valid on the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_ingest::agentdojo::{ImportStats, Mapping, convert_run};
use toolgate_protocol::{Event, Timestamp};

fuzz_target!(|data: &[u8]| {
    let mapping = Mapping::shipped().expect("shipped mapping");
    let mut stats = ImportStats::default();
    let events = convert_run(
        "runs/p/banking/user_task_0/direct/injection_task_1.json",
        data,
        &mapping,
        Timestamp::EPOCH,
        &mut stats,
    );
    for e in &events {
        Event::decode(e.to_json().as_bytes()).expect("importer output decodes");
    }
    assert_eq!(stats.runs + stats.bad_file_count, 1);
});
