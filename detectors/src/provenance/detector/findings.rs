//! The findings the detector raises: a flow of untrusted content to an egress call,
//! and an egress destination taken from untrusted content, each with the evidence
//! (sources, fragments, similarity) that explains it.

use super::*;

impl ProvenanceDetector {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn flow_finding(
        &self,
        event: &Event,
        server: &str,
        tool: &str,
        to: u8,
        leaves: &[Leaf],
        matches: &BTreeMap<u64, SourceMatch>,
        user_directed: bool,
    ) -> Option<FindingDraft> {
        let to_name = &self.domains[usize::from(to)];
        let agent = event.agent_id.as_str();
        let mut hits: Vec<FlowHit<'_>> = Vec::new();
        for (&seq, m) in matches.iter().rev() {
            let Some(src) = self.index.source(agent, seq) else {
                continue;
            };
            let by_atoms = m.atoms.iter().any(|a| a.kind.is_data())
                || m.atoms.iter().filter(|a| !a.kind.is_data()).count()
                    >= self.settings.min_contact_atoms;
            if m.text.is_none() && !by_atoms {
                continue;
            }
            let bytes = m.text.as_ref().map_or_else(
                || m.atoms.iter().map(|a| a.value.len()).sum(),
                |t| t.leaf_bytes,
            );
            let forbidden: Vec<&str> = self
                .label_names(src.labels)
                .into_iter()
                .filter(|from| self.config.flow_forbidden(from, to_name))
                .filter(|from| self.excepted(from, to_name, server, tool, bytes).is_none())
                .map(|from| {
                    self.domains
                        .iter()
                        .find(|d| **d == from)
                        .map_or("", String::as_str)
                })
                .collect();
            if forbidden.is_empty() {
                continue;
            }
            hits.push(FlowHit {
                src,
                m,
                from: forbidden,
            });
        }
        // Strongest evidence first: text containment, then data atoms, newest source first.
        hits.sort_by(|a, b| {
            let score = |h: &FlowHit<'_>| h.m.text.as_ref().map_or(0.0, |t| t.containment);
            score(b).total_cmp(&score(a))
        });
        let best = hits.first()?;
        let from = best.from[0];
        let secret = hits.iter().any(|h| {
            h.from
                .iter()
                .any(|f| self.settings.critical_domains.iter().any(|c| c == f))
        });
        let (severity, risk) = match (user_directed, secret) {
            (true, _) => (Severity::Info, 20),
            (false, true) => (Severity::Critical, 95),
            (false, false) => (Severity::High, 80),
        };
        let confidence = best
            .m
            .text
            .as_ref()
            .map_or(0.8, |t| 0.5 + t.containment / 2.0);
        let leaf = best
            .m
            .text
            .as_ref()
            .map(|t| t.leaf)
            .or(best.m.atom_leaf)
            .and_then(|i| leaves.get(i));
        let sources: Vec<Value> = hits
            .iter()
            .take(MAX_SOURCES_SHOWN)
            .map(|h| self.source_json(h.src, Some(h)))
            .collect();
        let rule = format!("{from} -> {to_name}");
        let mut evidence = json!({
            "flow": { "from": from, "to": to_name, "rule": rule },
            "sources": sources,
            "sources_total": hits.len(),
            "user_directed": user_directed,
        });
        if let Some(leaf) = leaf {
            evidence["argument"] = json!(leaf.path);
            evidence["fragment"] = json!(fragment(&leaf.text, self.settings.max_fragment_chars));
            let layers: Vec<&str> = leaf
                .path
                .match_indices('[')
                .filter_map(|(i, _)| {
                    let rest = &leaf.path[i + 1..];
                    let end = rest.find(']')?;
                    let layer = &rest[..end];
                    (!layer.chars().all(|c| c.is_ascii_digit())).then_some(layer)
                })
                .collect();
            if !layers.is_empty() {
                evidence["decoded"] = json!(layers);
            }
        }
        let src = best.src;
        let derived = if src.derived_from.is_empty() {
            ""
        } else {
            " (derived from earlier data it was given)"
        };
        let directed = if user_directed {
            " Every destination of the call is one the user named in this session, so it is recorded, not alerted."
        } else {
            ""
        };
        let mut draft = FindingDraft::about(DetectorKind::Provenance, "cross_domain_flow", event)
            .describe(
                format!("Data from {from} server {:?} sent to {to_name} tool {tool:?} on {server:?}", src.server),
                format!(
                    "The call's arguments contain data that tool {:?} on server {:?} returned earlier{derived}. \
                     The flow policy forbids data from {from} reaching {to_name}.{directed}",
                    src.tool, src.server
                ),
            )
            .rate(severity, risk, confidence)
            .group_by(
                [agent, event.session_id.as_str(), from, server, tool].join("\u{1f}"),
            )
            .evidence(evidence)
            .with_events(hits.iter().take(MAX_SOURCES_SHOWN).map(|h| h.src.event_id.clone()))
            .tags(["owasp-llm:LLM02", "atlas:AML.T0057"]);
        if self.settings.mode == Mode::Enforce && !user_directed {
            draft = draft.block();
        }
        Some(draft)
    }

    pub(super) fn destination_finding(
        &self,
        event: &Event,
        server: &str,
        tool: &str,
        to_name: &str,
        leaves: &[Leaf],
        dest_atoms: &[DestinationAtom],
    ) -> Option<FindingDraft> {
        let agent = event.agent_id.as_str();
        let mut flagged = Vec::new();
        let mut event_ids = Vec::new();
        let mut prose_any = false;
        for DestinationAtom {
            leaf,
            atom,
            sources,
        } in dest_atoms
        {
            let sources: Vec<(&Source, bool)> = sources
                .iter()
                .filter_map(|&(s, prose)| Some((self.index.source(agent, s)?, prose)))
                .collect();
            let untrusted: Vec<(&Source, bool)> = sources
                .iter()
                .copied()
                .filter(|(s, _)| s.labels & self.untrusted_mask != 0)
                .collect();
            let vouched = sources.iter().any(|(s, _)| self.vouches(s));
            if untrusted.is_empty() || vouched {
                continue;
            }
            let in_prose = untrusted.iter().any(|(_, prose)| *prose);
            let leaf = &leaves[*leaf];
            event_ids.extend(
                untrusted
                    .iter()
                    .take(MAX_SOURCES_SHOWN)
                    .map(|(s, _)| s.event_id.clone()),
            );
            prose_any |= in_prose;
            flagged.push(json!({
                "argument": leaf.path,
                "kind": atom.kind.as_str(),
                "value": fragment(&atom.value, self.settings.max_fragment_chars),
                "placement": if in_prose { "prose" } else { "record" },
                "sources": untrusted.iter().take(MAX_SOURCES_SHOWN).map(|(s, _)| self.source_json(s, None)).collect::<Vec<_>>(),
                "sources_total": untrusted.len(),
            }));
        }
        if flagged.is_empty() {
            return None;
        }
        // Prose first: that is where an injected instruction puts its address.
        flagged.sort_by_key(|f| f["placement"] != "prose");
        let first = &flagged[0];
        let value = first["value"].as_str().unwrap_or("").to_string();
        let from_server = first["sources"][0]["server"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let (title, how, severity, risk, confidence) = if prose_any {
            (
                "sends to a destination found only in untrusted content",
                "in text from",
                Severity::High,
                85,
                0.8,
            )
        } else {
            (
                "sends to a destination found only in untrusted records",
                "as a field of a record from",
                Severity::Info,
                20,
                0.3,
            )
        };
        let mut draft = FindingDraft::about(DetectorKind::Provenance, "untrusted_destination", event)
            .describe(
                format!("{tool:?} on {server:?} {title}"),
                format!(
                    "The destination {value:?} of this {to_name} call appears {how} {from_server:?}, \
                     which outsiders can write, and in nothing the user said or a trusted source returned. \
                     Written into text, this is what an agent obeying an indirect prompt injection looks like; \
                     as a record's field (a sender, a participant, a past payee) it is more often routine."
                ),
            )
            .rate(severity, risk, confidence)
            .group_by([agent, event.session_id.as_str(), server, tool, &value].join("\u{1f}"))
            .evidence(json!({ "destinations": flagged, "egress": { "server": server, "tool": tool, "trust_domain": to_name } }))
            .with_events(event_ids)
            .tags(["owasp-asi:ASI01", "atlas:AML.T0051.001"]);
        if prose_any && self.settings.mode == Mode::Enforce {
            draft = draft.block();
        }
        Some(draft)
    }

    /// A source vouches for a destination when the user said it, or when a server that
    /// is neither untrusted nor egress returned it without having been handed untrusted
    /// data first.
    fn vouches(&self, s: &Source) -> bool {
        if s.labels & USER_BIT != 0 {
            return true;
        }
        let own = self
            .domains
            .get(usize::from(s.domain))
            .map_or("", String::as_str);
        s.labels & self.untrusted_mask == 0 && !self.egress_domains.iter().any(|d| d == own)
    }

    fn source_json(&self, s: &Source, hit: Option<&FlowHit<'_>>) -> Value {
        let mut v = json!({
            "event_id": s.event_id,
            "session_id": s.session,
            "server": s.server,
            "tool": s.tool,
            "trust_domain": self.domains.get(usize::from(s.domain)).cloned().unwrap_or_else(|| "user".into()),
            "labels": self.label_names(s.labels),
            "time": s.time.to_string(),
        });
        if !s.derived_from.is_empty() {
            v["derived_from"] = json!(s.derived_from);
        }
        if let Some(h) = hit {
            if let Some(t) = &h.m.text {
                v["matched_by"] = json!("text");
                v["containment"] = json!(round3(t.containment));
                v["similarity"] = json!(round3(t.jaccard));
                v["shared_chars"] = json!(t.shared.round() as usize + sketch::SHINGLE - 1);
            } else {
                v["matched_by"] = json!("atoms");
            }
            if !h.m.atoms.is_empty() {
                v["atoms"] = json!(h.m.atoms.iter().map(|a| json!({"kind": a.kind.as_str(), "value": fragment(&a.value, self.settings.max_fragment_chars)})).collect::<Vec<_>>());
            }
        }
        v
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The first `max` characters of `s`, with an ellipsis when cut.
fn fragment(s: &str, max: usize) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}
