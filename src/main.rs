use clap::Parser;
use toolgate::cli::{Cli, Command, ConfigCommand, HistoryCommand, ImportCommand, RulesCommand};
use toolgate::commands;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Commands whose product is stdout and that write to no socket end quietly on a
    // closed pipe. The others keep SIGPIPE ignored: TLS and HTTP clients write with
    // `writev`, and a peer's reset must be an error they retry, not a silent exit.
    if matches!(
        cli.command,
        Command::Import(_)
            | Command::Eval(_)
            | Command::Definitions(_)
            | Command::Rules(_)
            | Command::Train(_)
            | Command::Config(_)
    ) {
        toolgate_edge::signals::default_sigpipe();
    }
    toolgate_edge::logging::init(cli.log_format);
    match &cli.command {
        Command::Import(ImportCommand::Agentdojo(args)) => commands::import::agentdojo(args),
        Command::Import(ImportCommand::Safetybench(args)) => commands::import::safetybench(args),
        Command::Import(ImportCommand::Injecagent(args)) => commands::import::injecagent(args),
        Command::Run(args) => commands::run::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Analyze(args) => commands::analyze::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Definitions(cmd) => commands::definitions::run(cmd),
        Command::Rules(RulesCommand::Check(args)) => commands::rules::check(args),
        Command::Rules(RulesCommand::ImportSigma(args)) => commands::rules::import_sigma(args),
        Command::Train(args) => commands::train::run(args),
        Command::Sql(args) => commands::sql::run(args),
        Command::ServeSql(args) => commands::sql::serve(args),
        Command::History(HistoryCommand::Compact(args)) => commands::history::compact(args),
        Command::Config(ConfigCommand::Check(args)) => commands::config::check(args),
        Command::Decisions(cmd) => commands::decisions::run(cmd),
    }
}
