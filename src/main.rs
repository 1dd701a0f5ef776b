use clap::Parser;
use toolgate::cli::{Cli, Command, HistoryCommand, ImportCommand, RulesCommand};
use toolgate::commands;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Servers keep SIGPIPE ignored; every other command writes its product to stdout.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Demo(_) | Command::ServeSql(_)
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
    }
}
