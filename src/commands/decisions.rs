//! `toolgate decisions list|lift`: the blocks in force on the decisions topic, and
//! lifting one with a signed `allow` of its scope. Both read the engine's signing key
//! (`[engine] data_dir` and `signing_key_file`), so they run where the engine runs:
//! only what that key signed is listed, and only the engine's key can lift.

use std::io::Write;

use anyhow::{Context, Result, bail};
use toolgate_engine::decision_log::{self, DecisionLog};
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::Config;
use toolgate_protocol::decision::{Decision, DecisionSigner, DecisionVerifier};

use super::load_config;
use crate::cli::{DecisionsCommand, DecisionsLiftArgs, DecisionsTarget};

/// Runs a `toolgate decisions` subcommand.
pub fn run(command: &DecisionsCommand) -> Result<()> {
    match command {
        DecisionsCommand::List(target) => list(target),
        DecisionsCommand::Lift(args) => lift(args),
    }
}

fn list(target: &DecisionsTarget) -> Result<()> {
    let (config, brokers, signer) = open(target)?;
    let log = DecisionLog::read(&config, &brokers, &verifier(&signer)?)?;
    let mut out = std::io::stdout().lock();
    let in_force = log.in_force(Timestamp::now());
    for d in &in_force {
        writeln!(out, "{}", line(d))?;
    }
    writeln!(
        out,
        "{} block(s) in force; {} decision(s) read, {} record(s) ignored (not signed by key {:?})",
        in_force.len(),
        log.decisions.len(),
        log.ignored,
        signer.key_id()
    )?;
    Ok(())
}

fn lift(args: &DecisionsLiftArgs) -> Result<()> {
    if args.reason.trim().is_empty() {
        bail!("--reason is empty: say why the block is lifted (it is kept on the topic)");
    }
    let (config, brokers, signer) = open(&args.target)?;
    let log = DecisionLog::read(&config, &brokers, &verifier(&signer)?)?;
    let Some(block) = log
        .decisions
        .iter()
        .rev()
        .find(|d| d.decision_id == args.decision_id)
    else {
        bail!(
            "no decision {:?} signed by key {:?} on {}",
            args.decision_id,
            signer.key_id(),
            config.kafka.topics.decisions
        );
    };
    if block.action != toolgate_protocol::decision::DecisionAction::Block {
        bail!("decision {:?} is not a block", args.decision_id);
    }
    let now = Timestamp::now();
    if block.expires_at.is_some_and(|e| e <= now) {
        bail!("decision {:?} has already expired", args.decision_id);
    }
    if log.lifted(block) {
        println!("{} is already lifted", block.decision_id);
        return Ok(());
    }
    let who = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "an operator".into());
    let allow = decision_log::lift(&signer, block, now, &who, args.reason.trim());
    decision_log::publish(&config, &brokers, &allow)?;
    tracing::info!(decision_id = %allow.decision_id, lifted = %block.decision_id, who, reason = %args.reason.trim(), "block lifted");
    println!(
        "lifted {} with {}: {}",
        block.decision_id,
        allow.decision_id,
        line(&allow)
    );
    Ok(())
}

fn open(target: &DecisionsTarget) -> Result<(Config, String, DecisionSigner)> {
    let config = load_config(target.config.as_deref())?;
    let brokers = match (&target.brokers, config.kafka.brokers.is_empty()) {
        (Some(b), _) => b.clone(),
        (None, false) => config.kafka.brokers.join(","),
        (None, true) => bail!(
            "no brokers: give --brokers (the embedded broker's address is in `toolgate run`'s log) or set [kafka] brokers"
        ),
    };
    let key = toolgate_engine::data_path(&config, &config.engine.signing_key_file);
    let seed = std::fs::read_to_string(&key).with_context(|| {
        format!(
            "cannot read the engine's signing key {} (run this where the engine runs)",
            key.display()
        )
    })?;
    let signer = DecisionSigner::from_seed_base64(&config.engine.key_id, seed.trim())
        .with_context(|| format!("signing key {}", key.display()))?;
    Ok((config, brokers, signer))
}

fn verifier(signer: &DecisionSigner) -> Result<DecisionVerifier> {
    let mut v = DecisionVerifier::default();
    v.add_key(signer.key_id(), &signer.public_key_base64())?;
    Ok(v)
}

/// One decision on one line: id, agent, scope, expiry, reason.
fn line(d: &Decision) -> String {
    let s = &d.scope;
    let or_any = |v: &Option<String>| v.clone().unwrap_or_else(|| "*".into());
    format!(
        "{}\tagent={}\tsession={}\tserver={}\ttool={}\tdestination={}\tuntil={}\t{}",
        d.decision_id,
        s.agent_id,
        or_any(&s.session_id),
        or_any(&s.server),
        or_any(&s.tool),
        or_any(&s.destination),
        d.expires_at.map_or("-".into(), |e| e.to_string()),
        d.reason
    )
}
