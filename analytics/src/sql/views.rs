//! Views every session has, documented in the README's SQL section. Each is plain SQL
//! over the tables, so analysts can read what it does with `SHOW CREATE` or here.

/// `(name, CREATE VIEW statement)`.
pub const VIEWS: [(&str, &str); 4] = [
    (
        "sessions",
        "CREATE VIEW sessions AS
         SELECT c.agent_id, c.session_id,
                min(c.agent_role) AS agent_role,
                min(c.time) AS started,
                max(c.time) AS last_call,
                count(*) AS calls,
                count(DISTINCT c.tool) AS tools,
                count(DISTINCT c.server) AS servers,
                sum(CASE WHEN c.sink_action = 'blocked' THEN 1 ELSE 0 END)
                  + coalesce(max(r.refused), 0) AS blocked_calls,
                coalesce(max(f.findings), 0) AS findings,
                max(f.max_risk) AS max_risk
         FROM tool_calls c
         LEFT JOIN (SELECT agent_id, session_id, count(*) AS findings,
                           max(risk_score) AS max_risk
                    FROM findings GROUP BY agent_id, session_id) f
           ON c.agent_id = f.agent_id AND c.session_id = f.session_id
         LEFT JOIN (SELECT agent_id, session_id, count(*) AS refused
                    FROM tool_results WHERE sink_action = 'blocked'
                      AND (sink_rule LIKE 'decision.%' OR sink_rule LIKE 'hold.%')
                    GROUP BY agent_id, session_id) r
           ON c.agent_id = r.agent_id AND c.session_id = r.session_id
         GROUP BY c.agent_id, c.session_id",
    ),
    (
        "flows",
        "CREATE VIEW flows AS
         SELECT time, agent_id, session_id, finding_id, severity, risk_score, action,
                json_get_str(evidence, 'flow', 'from') AS from_domain,
                json_get_str(evidence, 'flow', 'to') AS to_domain,
                json_get_str(evidence, 'sources', 0, 'server') AS source_server,
                json_get_str(evidence, 'sources', 0, 'tool') AS source_tool,
                json_get_str(evidence, 'sources', 0, 'event_id') AS source_event_id,
                server AS sink_server, tool AS sink_tool, call_id,
                json_get_str(evidence, 'argument') AS argument,
                json_get_bool(evidence, 'user_directed') AS user_directed
         FROM findings
         WHERE detector = 'provenance' AND rule_id = 'cross_domain_flow'",
    ),
    (
        "agents",
        "CREATE VIEW agents AS
         SELECT c.agent_id,
                min(c.agent_role) AS agent_role,
                min(c.time) AS first_call,
                max(c.time) AS last_call,
                count(*) AS calls,
                count(DISTINCT c.session_id) AS sessions,
                count(DISTINCT c.server) AS servers,
                sum(CASE WHEN c.sink_action = 'blocked' THEN 1 ELSE 0 END)
                  + coalesce(max(r.refused), 0) AS blocked_calls,
                coalesce(max(f.findings), 0) AS findings,
                coalesce(max(f.block_findings), 0) AS block_findings
         FROM tool_calls c
         LEFT JOIN (SELECT agent_id, count(*) AS findings,
                           sum(CASE WHEN action = 'block' THEN 1 ELSE 0 END) AS block_findings
                    FROM findings GROUP BY agent_id) f
           ON c.agent_id = f.agent_id
         LEFT JOIN (SELECT agent_id, count(*) AS refused
                    FROM tool_results WHERE sink_action = 'blocked'
                      AND (sink_rule LIKE 'decision.%' OR sink_rule LIKE 'hold.%')
                    GROUP BY agent_id) r
           ON c.agent_id = r.agent_id
         GROUP BY c.agent_id",
    ),
    // A held call's event says `held`; the sink reports how it was settled on the
    // call's result (a refusal it made, or the server's result of a released call).
    (
        "call_outcomes",
        "CREATE VIEW call_outcomes AS
         SELECT c.time, c.agent_id, c.session_id, c.server, c.tool, c.call_id, c.event_id,
                c.sink_action AS sink_action_at_call,
                coalesce(r.sink_action, c.sink_action) AS sink_action,
                coalesce(r.sink_rule, c.sink_rule) AS sink_rule,
                coalesce(r.sink_reason, c.sink_reason) AS sink_reason
         FROM tool_calls c
         LEFT JOIN (SELECT agent_id, session_id, server, call_id,
                           min(sink_action) AS sink_action, min(sink_rule) AS sink_rule,
                           min(sink_reason) AS sink_reason
                    FROM tool_results
                    WHERE sink_rule LIKE 'decision.%' OR sink_rule LIKE 'hold.%'
                    GROUP BY agent_id, session_id, server, call_id) r
           ON c.agent_id = r.agent_id AND c.session_id = r.session_id
          AND c.server = r.server AND c.call_id = r.call_id",
    ),
];
