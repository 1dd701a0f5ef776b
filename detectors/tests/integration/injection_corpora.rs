//! The `injection` detector on public corpora in `../shared/datasets`: poisoned MCP tool
//! descriptions and injected returns from MCP-SafetyBench against InjecAgent's 330
//! clean tool specifications. Target (issue 4): at least 95 % of poisoned descriptions
//! flagged at no more than 1 % of clean ones. Per-signal counts are printed
//! (`cargo test -p toolgate-detectors --test integration injection_corpora:: -- --nocapture`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toolgate_detectors::injection::analysis::signal_ids;
use toolgate_detectors::{Detector, FindingDraft, build_detectors, registry};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

fn datasets() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets");
    assert!(p.exists(), "shared datasets missing at {}", p.display());
    p
}

fn injection() -> Box<dyn Detector> {
    let config = Config::from_toml("", "test").unwrap();
    build_detectors(&registry(), &config)
        .unwrap()
        .into_iter()
        .find(|d| d.name() == "injection")
        .expect("injection detector registered")
}

/// Runs the detector; returns whether it flagged and which signals fired.
fn judge(detector: &mut Box<dyn Detector>, event: &Event) -> (bool, Vec<String>) {
    let mut out: Vec<FindingDraft> = Vec::new();
    detector.observe(event, &mut out);
    let signals = out
        .iter()
        .flat_map(|d| {
            d.evidence["signals"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    (!out.is_empty(), signals)
}

struct Tally {
    n: usize,
    flagged: usize,
    signals: BTreeMap<String, usize>,
}

fn tally(detector: &mut Box<dyn Detector>, events: &[Event]) -> Tally {
    let mut t = Tally {
        n: 0,
        flagged: 0,
        signals: BTreeMap::new(),
    };
    for e in events {
        let (flagged, signals) = judge(detector, e);
        t.n += 1;
        t.flagged += usize::from(flagged);
        for s in signals {
            *t.signals.entry(s).or_default() += 1;
        }
    }
    t
}

/// Events of one importer, split by their `sample` label.
fn imported(import: toolgate_ingest::corpora::Importer, dir: &str) -> BTreeMap<String, Vec<Event>> {
    let mut by_sample: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    import(&datasets().join(dir), &mut |e| {
        let sample = e.labels.get("sample").cloned().unwrap_or_default();
        by_sample.entry(sample).or_default().push(e.clone());
        Ok(())
    })
    .unwrap();
    by_sample
}

fn report(name: &str, t: &Tally) {
    println!(
        "{name}: {}/{} flagged ({:.1} %)",
        t.flagged,
        t.n,
        100.0 * t.flagged as f64 / t.n as f64
    );
    for id in signal_ids() {
        if let Some(n) = t.signals.get(id) {
            println!("    {id:20} {n}");
        }
    }
}

#[test]
fn poisoned_descriptions_are_flagged_and_clean_ones_are_not() {
    let mut d = injection();
    let mut safetybench = imported(
        toolgate_ingest::corpora::import_safetybench,
        "mcp-safetybench",
    );
    let mut injecagent = imported(toolgate_ingest::corpora::import_injecagent, "injecagent");
    let poisoned = safetybench.remove("description").unwrap_or_default();
    let returns: Vec<Event> = safetybench
        .remove("result")
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.kind() == toolgate_protocol::EventKind::ToolResult)
        .collect();
    let clean = injecagent.remove("description").unwrap_or_default();
    assert_eq!(poisoned.len(), 96);
    assert_eq!(clean.len(), 330);
    let p = tally(&mut d, &poisoned);
    let c = tally(&mut d, &clean);
    let r = tally(&mut d, &returns);
    report("MCP-SafetyBench poisoned descriptions", &p);
    report("MCP-SafetyBench injected returns", &r);
    report("InjecAgent clean tool specs", &c);
    assert!(
        p.flagged * 100 >= p.n * 95,
        "poisoned flagged {}/{}",
        p.flagged,
        p.n
    );
    assert!(
        c.flagged * 100 <= c.n,
        "clean flagged {}/{}",
        c.flagged,
        c.n
    );
    assert!(
        r.flagged * 100 >= r.n * 95,
        "injected returns flagged {}/{}",
        r.flagged,
        r.n
    );
}
