//! Where a valid config leaves protection off without saying so: a sink that never
//! hears the engine's decisions, a held call with no engine to ask, pins that die with
//! the process, redaction that hides what provenance matches on. Each binary reports
//! these at start (refusing the worst) and `toolgate config check` prints the same
//! report, so an operator learns of a gap from the config, not from an incident.

use std::path::PathBuf;

use super::{Config, RedactionMode};

/// Which binary the report is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `toolgate-sink`, with `brokers` from its command line if given.
    Sink {
        /// `--brokers` was given and not empty.
        brokers_flag: bool,
    },
    /// `toolgate run`.
    Engine,
}

/// How bad a gap is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something the binary does by default that the operator should know of.
    Note,
    /// Protection is weaker than the config suggests; the binary starts and says so.
    Warn,
    /// Protection would be off without a word: the binary refuses to start.
    Refuse,
}

impl Level {
    /// `note`, `warn` or `refuse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Note => "note",
            Level::Warn => "warn",
            Level::Refuse => "refuse",
        }
    }
}

/// One gap: the key to change and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// How bad it is.
    pub level: Level,
    /// The dotted key that causes it or fixes it.
    pub key: String,
    /// What happens and what to do.
    pub message: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} `{}`: {}",
            self.level.as_str(),
            self.key,
            self.message
        )
    }
}

impl Config {
    /// Whether `[detectors.NAME]` runs: present or absent, unless `enabled = false`.
    pub fn detector_enabled(&self, name: &str) -> bool {
        self.detectors
            .get(name)
            .and_then(|t| t.get("enabled"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true)
    }

    /// Where the sink of `server` keeps its pins: `[detectors.definitions] pins_file`,
    /// else `@pins/<server>.json` under `[sink] spool_dir` (one file per server, so
    /// the proxies an agent starts for its servers never overwrite each other's pins;
    /// `@` is in no spool directory's name), so a definition changed between two runs
    /// of the agent is caught; `None` when the `definitions` detector is off.
    pub fn sink_pins_file(&self, server: &str) -> Option<PathBuf> {
        if !self.detector_enabled("definitions") {
            return None;
        }
        Some(self.pins_file().unwrap_or_else(|| {
            self.sink_pins_dir()
                .join(format!("{}.json", super::file_name_of(server)))
        }))
    }

    /// Where sinks keep their per-server pins files when `pins_file` is not set.
    pub fn sink_pins_dir(&self) -> PathBuf {
        PathBuf::from(&self.sink.spool_dir).join("@pins")
    }

    /// The gaps of this config for `role`, worst first.
    pub fn gaps(&self, role: Role) -> Vec<Gap> {
        let mut out = Vec::new();
        match role {
            Role::Sink { brokers_flag } => self.sink_gaps(brokers_flag, &mut out),
            Role::Engine => self.engine_gaps(&mut out),
        }
        out.sort_by_key(|g| std::cmp::Reverse(g.level));
        out
    }

    fn sink_gaps(&self, brokers_flag: bool, out: &mut Vec<Gap>) {
        let mut gap = |level, key: &str, message: String| {
            out.push(Gap {
                level,
                key: key.to_string(),
                message,
            })
        };
        let brokers = brokers_flag || !self.kafka.brokers.is_empty();
        let enforce = self.sink.enforce_decisions.unwrap_or(true);
        if brokers && enforce && self.sink.decision_keys.is_empty() {
            gap(
                Level::Refuse,
                "sink.decision_keys",
                "empty while events go to the engine: the sink could verify none of its \
                 decisions, so blocks would never apply and held calls would wait out their \
                 timeout. Add the engine's key (`toolgate run` prints the line to paste), or \
                 set [sink] enforce_decisions = false to run without enforcement"
                    .into(),
            );
        }
        if brokers && !enforce {
            gap(
                Level::Warn,
                "sink.enforce_decisions",
                "false: the engine's blocks and verdicts are not applied here (the local \
                 policy, secret and pin checks still are)"
                    .into(),
            );
        }
        for (i, hold) in self.sink.hold.iter().enumerate() {
            let why = if !brokers {
                "there is no engine to ask ([kafka] brokers is empty and no --brokers)"
            } else if !enforce {
                "the engine's verdicts are not applied (enforce_decisions = false)"
            } else {
                continue;
            };
            // Failing open passes every call unchecked, without a word: refused.
            // Failing closed refuses every call of the class: safe, but said.
            let (level, outcome) = match hold.fail_mode {
                super::FailMode::FailOpen => (
                    Level::Refuse,
                    "fail_open would let every call of the class pass unchecked",
                ),
                super::FailMode::FailClosed => {
                    (Level::Warn, "fail_closed refuses every call of the class")
                }
            };
            gap(
                level,
                &format!("sink.hold[{i}]"),
                format!(
                    "class {:?} holds calls for a verdict, but {why}: {outcome}",
                    hold.name
                ),
            );
        }
        if self.detector_enabled("provenance") && self.redaction.enabled {
            let hiding = |m: RedactionMode| matches!(m, RedactionMode::Mask | RedactionMode::Drop);
            if hiding(self.redaction.mode) {
                gap(
                    Level::Warn,
                    "redaction.mode",
                    format!(
                        "{:?} replaces emails, accounts and ids before events leave the sink, \
                         so the engine's provenance detector cannot match them to their \
                         source; use mode = \"hash\" with hash_key_env (equal values stay \
                         equal under a secret key)",
                        self.redaction.mode
                    )
                    .to_lowercase(),
                );
            }
        }
        match self.sink_pins_file("SERVER") {
            Some(path) if self.pins_file().is_none() => gap(
                Level::Note,
                "detectors.definitions.pins_file",
                format!(
                    "not set: each server's tool definitions are pinned in {} (under [sink] \
                     spool_dir; `toolgate definitions list --pins` reads it)",
                    path.display()
                ),
            ),
            Some(_) => {}
            None => gap(
                Level::Warn,
                "detectors.definitions.enabled",
                "false: tool definitions are not pinned, so a changed definition (a rug \
                 pull) is not held here"
                    .into(),
            ),
        }
    }

    fn engine_gaps(&self, out: &mut Vec<Gap>) {
        // A sink inspects messages up to `max_message_bytes` and wraps each in an
        // event; an engine that takes less dead-letters what the sink produced.
        let envelope = crate::event::EVENT_ENVELOPE_BYTES;
        if self.limits.max_event_bytes < self.sink.max_message_bytes + envelope {
            out.push(Gap {
                level: Level::Warn,
                key: "limits.max_event_bytes".into(),
                message: format!(
                    "{} is below what a sink produces ([sink] max_message_bytes {} plus \
                     {envelope} for the event around it): larger events are dead-lettered \
                     as too_large, not inspected",
                    self.limits.max_event_bytes, self.sink.max_message_bytes
                ),
            });
        }
        // An OTLP request carries a tool span whole: one smaller than an event may be
        // refuses the span an event would hold.
        if self.otlp.listen.is_some() && self.otlp.max_request_bytes < self.limits.max_event_bytes {
            out.push(Gap {
                level: Level::Warn,
                key: "otlp.max_request_bytes".into(),
                message: format!(
                    "{} is below [limits] max_event_bytes {}: a tool span as large as an \
                     event is refused (413) and never inspected",
                    self.otlp.max_request_bytes, self.limits.max_event_bytes
                ),
            });
        }
        if !self.detector_enabled("definitions") {
            out.push(Gap {
                level: Level::Warn,
                key: "detectors.definitions.enabled".into(),
                message: "false: poisoned and changed tool definitions are not detected".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(toml: &str, role: Role) -> Vec<(Level, String)> {
        Config::from_toml(toml, "<inline>")
            .unwrap()
            .gaps(role)
            .into_iter()
            .map(|g| (g.level, g.key))
            .collect()
    }

    const SINK: Role = Role::Sink {
        brokers_flag: false,
    };

    #[test]
    fn issue_22_brokers_without_decision_keys_refuse_unless_enforcement_is_off() {
        let brokers = "[kafka]\nbrokers = [\"kafka-1:9092\"]\n";
        assert!(
            gaps(brokers, SINK).contains(&(Level::Refuse, "sink.decision_keys".into())),
            "{:?}",
            gaps(brokers, SINK)
        );
        let flag = gaps("", Role::Sink { brokers_flag: true });
        assert_eq!(flag[0], (Level::Refuse, "sink.decision_keys".into()));
        let off = gaps(
            &format!("[sink]\nenforce_decisions = false\n{brokers}"),
            SINK,
        );
        assert!(off.iter().all(|(l, _)| *l != Level::Refuse), "{off:?}");
        assert!(off.contains(&(Level::Warn, "sink.enforce_decisions".into())));
        let keyed = gaps(&format!("{brokers}[sink.decision_keys]\ne = \"k\"\n"), SINK);
        assert!(keyed.iter().all(|(l, _)| *l != Level::Refuse), "{keyed:?}");
        // No brokers: an air-gapped sink writing a file has no decisions to miss.
        assert!(gaps("", SINK).iter().all(|(l, _)| *l != Level::Refuse));
    }

    #[test]
    fn issue_22_a_hold_class_with_no_engine_to_ask_refuses_when_it_fails_open() {
        let hold =
            "[[sink.hold]]\nname = \"egress\"\ntools = [\"send_*\"]\nfail_mode = \"fail_open\"\n";
        assert_eq!(gaps(hold, SINK)[0], (Level::Refuse, "sink.hold[0]".into()));
        let message = &Config::from_toml(hold, "<inline>").unwrap().gaps(SINK)[0].message;
        assert!(message.contains("no engine to ask"), "{message}");
        // Failing closed refuses the calls: safe, and said.
        let closed = hold.replace("fail_open", "fail_closed");
        assert_eq!(gaps(&closed, SINK)[0], (Level::Warn, "sink.hold[0]".into()));
        let linked =
            format!("[kafka]\nbrokers = [\"k:9092\"]\n[sink.decision_keys]\ne = \"k\"\n{hold}");
        assert!(gaps(&linked, SINK).iter().all(|(l, _)| *l != Level::Refuse));
    }

    #[test]
    fn issue_22_masking_with_provenance_on_is_a_warning_and_hash_is_not() {
        assert!(gaps("", SINK).contains(&(Level::Warn, "redaction.mode".into())));
        let hash = "[redaction]\nmode = \"hash\"\n";
        assert!(!gaps(hash, SINK).contains(&(Level::Warn, "redaction.mode".into())));
        let off = "[detectors.provenance]\nenabled = false\n";
        assert!(!gaps(off, SINK).contains(&(Level::Warn, "redaction.mode".into())));
    }

    #[test]
    fn issue_22_pins_default_under_the_spool_dir() {
        let c = Config::from_toml("[sink]\nspool_dir = \"/var/lib/sink\"\n", "<inline>").unwrap();
        assert_eq!(
            c.sink_pins_file("git/hub"),
            Some(PathBuf::from("/var/lib/sink/@pins/git_hub.json"))
        );
        let named = "[detectors.definitions]\npins_file = \"/etc/pins.json\"\n";
        let c = Config::from_toml(named, "<inline>").unwrap();
        assert_eq!(c.sink_pins_file("x"), Some(PathBuf::from("/etc/pins.json")));
        let off =
            Config::from_toml("[detectors.definitions]\nenabled = false\n", "<inline>").unwrap();
        assert_eq!(off.sink_pins_file("x"), None);
        assert!(
            off.gaps(SINK).contains(&Gap {
                level: Level::Warn,
                key: "detectors.definitions.enabled".into(),
                message: "false: tool definitions are not pinned, so a changed definition \
                              (a rug pull) is not held here"
                    .into()
            })
        );
    }

    #[test]
    fn issue_22_the_engine_takes_what_a_sink_produces() {
        assert!(
            gaps("", Role::Engine).is_empty(),
            "{:?}",
            gaps("", Role::Engine)
        );
        let small = "[limits]\nmax_event_bytes = 1048576\n";
        assert_eq!(
            gaps(small, Role::Engine),
            [(Level::Warn, "limits.max_event_bytes".to_string())]
        );
        let otlp = "[otlp]\nlisten = \"127.0.0.1:4318\"\n";
        assert!(gaps(otlp, Role::Engine).is_empty(), "the defaults agree");
        let small = format!("{otlp}max_request_bytes = 8388608\n");
        assert_eq!(
            gaps(&small, Role::Engine),
            [(Level::Warn, "otlp.max_request_bytes".to_string())]
        );
    }
}
