//! `switchboard`: the Switchboard engine on a mio event loop.

#![forbid(unsafe_code)]

mod server;

use switchboard_common::Command;

fn main() {
    let cli = switchboard_common::parse_cli();
    let Command::Serve(args) = cli.command;
    let settings = match args.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard: {e}");
            std::process::exit(2);
        }
    };
    switchboard_common::init_logging(&settings.log_level);
    if let Err(e) = server::run(settings) {
        eprintln!("switchboard: {e}");
        std::process::exit(1);
    }
}
